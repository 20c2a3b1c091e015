"""The stages a sync flow is given rather than imports (DESIGN §2; STYLE "stages the engine
calls, not imports").

The engine (:mod:`leadrelay.sync.engine`) runs read → normalize → tag → identify → *qualify* →
plan → write. Qualification (score, route, SLA clock; recycle plays on write-back; escalation of
breached clocks) belongs to :mod:`leadrelay.handoff`; the engine knows it only as a
:class:`QualifyStep`, built per flow by the :data:`QualifyFactory` its
:class:`~leadrelay.sync.engine.SyncContext` carries. :func:`handoff_qualify` is the default
factory: it imports the handoff package only when a flow runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from leadrelay.connectors.base import Connector, RawRecord
from leadrelay.model import Lead

if TYPE_CHECKING:
    from leadrelay.config import Config, FlowConfig
    from leadrelay.mappings.engine import Mapping as FieldMapping
    from leadrelay.sync.state import StateStore

__all__ = ["PageVerdict", "QualifyFactory", "QualifyStep", "handoff_qualify"]


class PageVerdict(Protocol):
    """What a qualify step did to one page: run-log events, and per lead whether it routed."""

    events: list[dict[str, Any]]
    routed: list[bool]


class QualifyStep(Protocol):
    """Qualification as a sync flow calls it."""

    #: Canonical fields the step sets, written to the destination even when the source's
    #: mapping holds none of them.
    fields: tuple[str, ...]

    def qualify_page(self, leads: Sequence[tuple[Lead, RawRecord | None, bool]]) -> PageVerdict:
        """Score, route (new leads only) and start the SLA clock of a forward page."""
        ...

    def recycle_page(self, leads: Iterable[Lead]) -> PageVerdict:
        """The recycle plays of the leads sales rejected, on a write-back page."""
        ...

    def escalation_events(self) -> list[dict[str, Any]]:
        """Escalate the destination's breached SLA clocks; the run-log events of what went."""
        ...


#: Builds a flow's qualify step: (config, store, flow, source, destination, destination
#: mapping, dry run) → the step, or None when the flow has none.
QualifyFactory = Callable[
    ["Config", "StateStore", "FlowConfig", Connector[Any], Connector[Any], "FieldMapping", bool],
    "QualifyStep | None",
]


def handoff_qualify(
    config: Config,
    store: StateStore,
    flow: FlowConfig,
    source: Connector[Any],
    destination: Connector[Any],
    destination_mapping: FieldMapping,
    dry_run: bool,
) -> QualifyStep:
    """The handoff rules' qualify step (:class:`leadrelay.handoff.qualify.Qualifier`)."""
    from leadrelay.handoff.qualify import Qualifier

    return Qualifier(
        config,
        store,
        destination,
        source=source,
        flow=flow,
        destination_mapping=destination_mapping,
        dry_run=dry_run,
    )
