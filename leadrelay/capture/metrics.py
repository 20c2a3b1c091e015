"""Prometheus counters of the capture service, on a private registry per app.

Counters (all labelled ``form`` and ``source``; ``form="unknown"`` when a request names no
configured form, so an attacker cannot grow the label set):

``leadrelay_capture_received_total``
    Leads (or, before a lead can be told apart, requests) that reached an endpoint.
``leadrelay_capture_stored_total``
    Leads newly stored in the inbox.
``leadrelay_capture_duplicates_total``
    Replays answered with the key stored the first time.
``leadrelay_capture_rejected_total``
    Requests refused, with a ``reason`` label (``bad_signature``, ``too_large``, ``honeypot`` …).
``leadrelay_capture_delivered_total`` / ``leadrelay_capture_failed_total``
    Inbox items delivered to their CRM, or given up on (dead-lettered). Read from the state
    store at scrape time, so they are right whichever process delivered them (``serve`` runs
    delivery in a child process) and survive restarts.

The gauge ``leadrelay_inbox_items{form, source, status}`` is read from the store too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["UNKNOWN_FORM", "CaptureMetrics"]

#: The ``form`` label of requests that name no configured form.
UNKNOWN_FORM = "unknown"


#: (form, source, status) -> number of inbox rows, as the state store counts them.
InboxBreakdown = Mapping[tuple[str, str, str], int]


class _InboxCollector(Collector):
    """The store-backed series: the inbox gauge and the delivered / failed counters."""

    def __init__(self, counts: Callable[[], InboxBreakdown]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "leadrelay_inbox_items",
            "Inbox items by form, source and delivery status.",
            labels=["form", "source", "status"],
        )
        delivered = CounterMetricFamily(
            "leadrelay_capture_delivered",
            "Captured leads delivered to their CRM.",
            labels=["form", "source"],
        )
        failed = CounterMetricFamily(
            "leadrelay_capture_failed",
            "Captured leads given up on (dead-lettered with the reason).",
            labels=["form", "source"],
        )
        try:
            counts = self._counts()
        except Exception:
            # A scrape must still answer while the store is down; /healthz reports the outage.
            return [gauge, delivered, failed]
        for (form, source, status), count in sorted(counts.items()):
            gauge.add_metric([form, source, str(status)], float(count))
            if status == "delivered":
                delivered.add_metric([form, source], float(count))
            elif status == "failed":
                failed.add_metric([form, source], float(count))
        return [gauge, delivered, failed]


class CaptureMetrics:
    """The capture service's counters on their own :class:`CollectorRegistry`.

    ``inbox_counts`` (optional) returns the inbox rows per (form, source, status) from the
    state store, for the inbox gauge and the delivered / failed counters.
    """

    def __init__(self, inbox_counts: Callable[[], InboxBreakdown] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("form", "source")
        self._received = Counter(
            "leadrelay_capture_received",
            "Leads or requests that reached a capture endpoint.",
            labels,
            registry=self.registry,
        )
        self._stored = Counter(
            "leadrelay_capture_stored",
            "Leads newly stored in the inbox.",
            labels,
            registry=self.registry,
        )
        self._duplicates = Counter(
            "leadrelay_capture_duplicates",
            "Replayed submissions answered with the key stored the first time.",
            labels,
            registry=self.registry,
        )
        self._rejected = Counter(
            "leadrelay_capture_rejected",
            "Requests refused, by reason.",
            (*labels, "reason"),
            registry=self.registry,
        )
        if inbox_counts is not None:
            self.registry.register(_InboxCollector(inbox_counts))

    def received(self, form: str, source: str, count: int = 1) -> None:
        """Count leads (or requests) that reached an endpoint."""
        self._received.labels(form=form, source=source).inc(count)

    def stored(self, form: str, source: str) -> None:
        """Count a lead newly stored in the inbox."""
        self._stored.labels(form=form, source=source).inc()

    def duplicate(self, form: str, source: str) -> None:
        """Count a replay answered with the existing key."""
        self._duplicates.labels(form=form, source=source).inc()

    def rejected(self, form: str, source: str, reason: str) -> None:
        """Count a refused request."""
        self._rejected.labels(form=form, source=source, reason=reason).inc()

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (``leadrelay_capture_stored_total`` …), 0 when unseen."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
