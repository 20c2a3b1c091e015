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

Several HTTP worker processes (``serve --http-workers N``) count into one directory
(:func:`shared_counts`, prometheus-client's multiprocess mode): a scrape answered by any of them
sums every worker's counters, a restarted worker's included.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["MULTIPROCESS_DIR_ENV", "UNKNOWN_FORM", "CaptureMetrics", "shared_counts"]

#: prometheus-client's multiprocess mode: set when a process imports it, its counters are kept
#: in files in that directory, which a scrape sums over processes.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
        self._inbox = None if inbox_counts is None else _InboxCollector(inbox_counts)
        if self._inbox is not None:
            self.registry.register(self._inbox)
        #: Counters shared with other processes (:func:`shared_counts`), or None.
        self._shared = os.environ.get(MULTIPROCESS_DIR_ENV) or None

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

    def _scraped(self) -> CollectorRegistry:
        """What a scrape reads: this registry, or the counters of every process sharing them
        with the store-backed series."""
        if self._shared is None:
            return self.registry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._shared)  # type: ignore[no-untyped-call]
        if self._inbox is not None:
            registry.register(self._inbox)
        return registry

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (``leadrelay_capture_stored_total`` …), 0 when unseen."""
        found = self._scraped().get_sample_value(name, labels)
        return 0.0 if found is None else found

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self._scraped())


@contextmanager
def shared_counts() -> Iterator[Path]:
    """A directory for the counters of the processes started inside (each must import
    prometheus-client after it is set: processes spawned afresh), named in their environment by
    :data:`MULTIPROCESS_DIR_ENV`. One given in the environment is used, emptied of an earlier
    run's counts (prometheus-client's rule); else a temporary one, removed after."""
    given = os.environ.get(MULTIPROCESS_DIR_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):
            old.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="leadrelay-metrics-"))
    os.environ[MULTIPROCESS_DIR_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
