"""One large flow split into page jobs that several workers share (PostgreSQL only).

A flow run by a worker (its *reader job*) reads its pages as any run does. When a pass reads
more than ``[worker] split_pages`` pages, each page becomes a *part*: a row of ``flow_parts``
(run, pass, part number, the records, the cursor after the page, status, lease) and a *part
job* in the queue, which any worker takes. The rules that keep the engine's guarantees
(DESIGN §7) with several writers:

1. **The reads are not split, the writes are.** Keyset reads cannot be cut into ranges up front
   (where page 7 starts is known once page 6 was read), so one reader reads; parts write.
2. **A record is written by one part.** Storing page *k* drops from the parts not started yet
   any earlier copy of a record page *k* holds again: the later copy is the newer one.
3. **A person is written by one part at a time.** Taking a part claims, in the same
   transaction, the keys of its records (the record, its identity e-mail, its lead key) with
   insert-or-ignore; a record whose key another running part holds goes to a new part that
   waits for that one (or is dropped, when the holder has a later copy of the same record).
   Claims live as long as the part's lease, which the part job's heartbeat renews.
4. **The cursor moves over a finished prefix only.** A part commits its page's state and
   marks itself done in one transaction, which moves the flow's cursor to the cursor after the
   longest run of finished pages from the first one. A part that fails, or whose worker dies,
   stops the cursor there.
5. **Passes are barriers.** The reader waits for every part of a pass (writing parts itself
   meanwhile, so one worker alone still finishes) before the next pass; the run is ``ok`` only
   when every part is, and its counts are the sum of its parts'.

A part whose worker died is taken again once its lease ran out: by the reader, by another part
job, or by its own job put back in the queue (:func:`~leadrelay.sync.jobs.retry_stalled_jobs`).
Its writes are idempotent upserts and its page commits once, so each lead is written once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from leadrelay.connectors.base import Deletion, Page
from leadrelay.connectors.errors import redact
from leadrelay.sync.dedupe import identity_email
from leadrelay.sync.engine import ConnectorPool, FlowStats, SyncContext, SyncEngine, record_id
from leadrelay.sync.lease import Lease
from leadrelay.sync.rules import Side
from leadrelay.sync.state import FlowPart, PartClaims, PartLost, PartStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from leadrelay.config import Config, FlowConfig
    from leadrelay.sync.state import StateStore

__all__ = [
    "DeferPart",
    "FlowSplitter",
    "PartsFailed",
    "deletion_of",
    "deletion_row",
    "part_keys",
    "run_part",
]

log = logging.getLogger("leadrelay.parts")

#: Queues the part job of (flow, run id, pass, part number).
DeferPart = Callable[[str, int, str, int], None]

#: How often a reader with nothing to write looks at its parts again (seconds).
_POLL_S = 0.2


class PartsFailed(Exception):
    """A part of the pass failed: the run fails, and its cursor stays before that part."""


def deletion_row(deletion: Deletion) -> dict[str, Any]:
    """A :class:`Deletion` as JSON for ``flow_parts``."""
    return {
        "record_id": deletion.record_id,
        "merged_into": deletion.merged_into,
        "at": None if deletion.at is None else deletion.at.isoformat(),
    }


def deletion_of(row: Mapping[str, Any]) -> Deletion:
    """The :class:`Deletion` of a :func:`deletion_row`."""
    at = row.get("at")
    return Deletion(
        record_id=str(row["record_id"]),
        merged_into=row.get("merged_into"),
        at=None if at is None else datetime.fromisoformat(str(at)),
    )


def _identity(email: Any) -> str | None:
    if not isinstance(email, str) or not email:
        return None
    try:
        return identity_email(email)
    except ValueError:
        return None


def part_keys(engine: SyncEngine, side: Side, part: FlowPart) -> PartClaims:
    """The keys a part writes, per record and per deletion: the record (``rec:``), its
    identity e-mail (``email:``), and the lead key it is linked to or its e-mail belongs to
    (``lead:``). Two records of one person share one of them."""
    store = engine.store
    reader = engine.connectors[side]
    mapping = engine.mappings[side]
    ids = [rid for rid in part.record_ids if rid is not None]
    gone = [str(row["record_id"]) for row in part.deleted]
    linked = store.keys_for_many(reader.name, [*ids, *gone]) if ids or gone else {}
    idents: list[str | None] = []
    for raw, rid in zip(part.records, part.record_ids, strict=True):
        draft = mapping.to_lead(raw, connection=reader.name, external_id=rid)
        idents.append(_identity(draft.values.get("email")))
    known = {ident for ident in idents if ident is not None}
    by_email = store.find_keys_by_emails(known) if known else {}
    record_keys: list[set[str]] = []
    for rid, ident in zip(part.record_ids, idents, strict=True):
        keys: set[str] = set()
        if rid is not None:
            keys.add(f"rec:{rid}")
            if rid in linked:
                keys.add(f"lead:{linked[rid]}")
        if ident is not None:
            keys.add(f"email:{ident}")
            if ident in by_email:
                keys.add(f"lead:{by_email[ident]}")
        record_keys.append(keys)
    deletion_keys: list[set[str]] = []
    for row in part.deleted:
        gone_id = str(row["record_id"])
        keys = {f"rec:{gone_id}"}
        if gone_id in linked:
            keys.add(f"lead:{linked[gone_id]}")
        if row.get("merged_into"):
            keys.add(f"rec:{row['merged_into']}")
        deletion_keys.append(keys)
    return record_keys, deletion_keys


def _stats_row(stats: FlowStats) -> dict[str, Any]:
    return {item.name: getattr(stats, item.name) for item in fields(FlowStats)}


def _stats_of(row: Mapping[str, Any]) -> FlowStats:
    known = {item.name for item in fields(FlowStats)}
    return FlowStats(**{key: value for key, value in row.items() if key in known})


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def run_part(
    context: SyncContext,
    flow: FlowConfig,
    run_id: int,
    phase: str,
    *,
    part: int | None = None,
    lease_s: float,
) -> bool:
    """Take one part of ``flow``'s run (``part``, or the first that can run) and write it:
    the engine's page steps, then its commit, which marks the part done and moves the cursor.

    Returns False when there was no part to take. A part that raises is recorded as failed
    (the run then fails); one taken over meanwhile (this process stalled past its lease)
    commits nothing.
    """
    store = context.store
    side = Side(phase)
    engine = SyncEngine.for_flow(context, flow)
    holder = _holder()
    claimed = store.claim_part(
        run_id,
        phase,
        holder=holder,
        lease_s=lease_s,
        claims=lambda found: part_keys(engine, side, found),
        part=part,
    )
    if claimed is None:
        return False
    connectors = (engine.source, engine.destination)
    calls_before = {c.name: c.api_calls for c in connectors}
    page = Page(
        records=claimed.records,
        cursor=None,
        deleted=tuple(deletion_of(row) for row in claimed.deleted),
    )

    finished = False

    def finish(conn: Connection) -> None:
        nonlocal finished
        finished = True  # no renewal after this: the part is done (or rolled back, and lost)
        engine.stats.api_calls = {c.name: c.api_calls - calls_before[c.name] for c in connectors}
        engine.stats.rounds = 0
        store.finish_part(
            run_id,
            phase,
            claimed.part,
            holder=holder,
            stats=_stats_row(engine.stats),
            conn=conn,
        )

    def renew() -> bool:
        if finished:
            return True
        return store.renew_part(run_id, phase, claimed.part, holder=holder, lease_s=lease_s)

    try:
        with Lease(renew, every_s=lease_s / 3, name=f"part {claimed.part} of run {run_id}"):
            engine.apply_page(side, page, then=finish)
    except PartLost as exc:
        log.warning("%s", exc)
    except Exception as exc:
        reason = redact(f"{type(exc).__name__}: {exc}")
        store.fail_part(run_id, phase, claimed.part, holder=holder, error=reason)
        log.error("flow %s: part %d of run %d failed: %s", flow.name, claimed.part, run_id, reason)
    return True


class FlowSplitter:
    """The reader's side of a split flow: a :class:`~leadrelay.sync.engine.PageSink`.

    It holds a pass's first ``split_pages`` pages; when the read yields another, every page of
    the pass (those held, and each one read after) is stored as a part and its job queued with
    ``defer``. A read that ends within ``split_pages`` pages is written by the reader, page by
    page, as without splitting. At the end of a split pass the reader writes parts itself
    until every one is done (the barrier), then :attr:`totals` holds their summed counts.

    The parts the reader writes use connectors of their own (:meth:`close` closes them), so
    the reader's API-call counts and the parts' add up without counting a call twice.
    """

    def __init__(
        self,
        config: Config,
        store: StateStore,
        run_id: int,
        flow: FlowConfig,
        *,
        defer: DeferPart,
        split_pages: int,
        lease_s: float,
    ) -> None:
        self.config = config
        self.store = store
        self.run_id = run_id
        self.flow = flow
        self.defer = defer
        self.split_pages = split_pages
        self.lease_s = lease_s
        self.totals = FlowStats(flow.name, rounds=0)
        #: How many parts each pass was split into (none: not split).
        self.parts: dict[Side, int] = {}
        self._held: list[Page] = []
        self._pool: ConnectorPool | None = None

    def take(self, engine: SyncEngine, from_side: Side, page: Page) -> bool:
        """Hold the page, or store it as a part once the pass is split."""
        if from_side in self.parts:
            self._store(engine, from_side, page)
            return True
        self._held.append(page)
        if len(self._held) > self.split_pages:
            self.parts[from_side] = 0
            held, self._held = self._held, []
            for each in held:
                self._store(engine, from_side, each)
        return True

    def _store(self, engine: SyncEngine, from_side: Side, page: Page) -> None:
        reader = engine.connectors[from_side]
        number = self.store.add_part(
            self.run_id,
            from_side.value,
            flow=self.flow.name,
            connection=reader.name,
            records=page.records,
            record_ids=[record_id(reader, raw) for raw in page.records],
            deleted=[deletion_row(d) for d in page.deleted],
            cursor=page.cursor,
        )
        self.parts[from_side] += 1
        self.defer(self.flow.name, self.run_id, from_side.value, number)

    def end_pass(self, engine: SyncEngine, from_side: Side) -> None:
        """Write the held pages (a pass that was not split), or wait for the pass's parts."""
        if from_side not in self.parts:
            held, self._held = self._held, []
            for page in held:
                engine.apply_page(from_side, page)
            return
        label = f"{self.flow.name}: parts of {engine.connectors[from_side].name}"
        while True:
            parts = self.store.list_parts(self.run_id, from_side.value, content=False)
            failed = [p for p in parts if p.status is PartStatus.FAILED]
            if failed:
                raise PartsFailed(
                    f"part {failed[0].part} of {len(parts)} failed: {failed[0].error}"
                )
            if all(p.status is PartStatus.DONE for p in parts):
                for done in parts:
                    if done.stats is not None:
                        self.totals.add(_stats_of(done.stats))
                return
            if self._write_one(from_side):
                continue
            if engine.on_page is not None:  # the lock heartbeat's check, and a stop asked for
                engine.on_page(label, 0, None)
            time.sleep(_POLL_S)

    def _write_one(self, from_side: Side) -> bool:
        if self._pool is None:
            self._pool = ConnectorPool(self.config, store=self.store)
        context = SyncContext(self.config, self.store, self._pool, run_id=self.run_id)
        return run_part(context, self.flow, self.run_id, from_side.value, lease_s=self.lease_s)

    def close(self) -> None:
        """Abandon the parts no worker started (the run ended early), forget the parts of the
        flow's earlier runs (this run's stay until the next one, to look at), close the
        connectors."""
        if self.parts:
            self.store.abandon_parts(self.run_id)
            self.store.drop_parts(self.flow.name, keep=self.run_id)
        if self._pool is not None:
            self._pool.close()
            self._pool = None
