"""Bulk API 2.0 ingest for backfills: one job per operation instead of a call per 200 records.

A job (crm-api-facts §2 "Bulk API 2.0"): ``POST jobs/ingest`` (Open) → ``PUT …/batches`` with
the CSV → ``PATCH {state: UploadComplete}`` → poll ``GET`` with backoff until ``JobComplete``
(or ``Failed`` / ``Aborted``) → read ``successfulResults`` (``sf__Id, sf__Created, …``) and
``failedResults`` (``sf__Id, sf__Error, …``). Both echo the uploaded columns, which is how each
result row is matched back to its input (rows are not returned in upload order).

Safety: an upload that failed ambiguously aborts its job and starts a new one (the data of an
aborted job is never processed); a retried ``UploadComplete`` answered 409 means the first one
was applied. The rows a job that ended ``Failed`` or ``Aborted`` did not process are written
through the REST API, record by record as below the threshold. Without an external id
field, the emails are looked up first and only the new ones are inserted, so nothing is
created twice.
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from leadrelay.connectors.base import UpsertInput, WriteOutcome, WriteResult, normalize_email
from leadrelay.connectors.errors import ConnectorError, Fatal, Rejected, Retryable
from leadrelay.connectors.policy import from_requests
from leadrelay.connectors.salesforce.results import (
    CONVERTED_LEAD,
    SYSTEM,
    customer_result,
    is_customer,
)

if TYPE_CHECKING:
    import requests

    from leadrelay.config import SalesforceConnection
    from leadrelay.connectors.policy import CallPolicy

__all__ = ["BulkHost", "parse_bulk_error", "run_ingest", "to_csv", "upsert"]


class BulkHost(Protocol):
    """What a Bulk API job needs of the connector that runs it (its session, auth, policy and
    the look-ups it shares with the REST path); the Salesforce connector is one."""

    settings: SalesforceConnection
    session: requests.Session
    policy: CallPolicy
    bulk_poll_s: float
    bulk_timeout_s: float
    _sleep: Callable[[float], None]

    @property
    def instance_url(self) -> str | None: ...

    @property
    def access_token(self) -> str | None: ...

    def client(self) -> Any: ...

    def _reauth(self) -> None: ...

    def _find_by_email(
        self, emails: Sequence[str], *, reuse: bool = False
    ) -> dict[str, dict[str, Any]]: ...

    def _external_value(self, item: UpsertInput) -> str: ...

    def _existing_customers(self, items: Sequence[UpsertInput]) -> dict[int, dict[str, Any]]: ...

    def _remember(
        self, emails: Sequence[str], found: Mapping[str, dict[str, Any]], now: float
    ) -> None: ...

    def _upsert_rest(self, items: list[UpsertInput]) -> list[WriteResult]: ...


_DONE = ("JobComplete", "Failed", "Aborted")
_POLL_CAP_S = 30.0


def parse_bulk_error(text: str) -> tuple[str | None, str, str | None]:
    """``(code, message, first field)`` of an ``sf__Error`` value (``CODE:message:F1,F2 --``)."""
    body = text.strip()
    if body.endswith("--"):
        body = body[:-2].rstrip()
    code, sep, rest = body.partition(":")
    if not sep or not code.isupper():
        return None, text.strip(), None
    message, sep, fields = rest.rpartition(":")
    if not sep:
        return code, rest, None
    first = fields.split(",")[0].strip() or None
    return code, message, first


#: A CSV value that sets a field to null (an empty value leaves the field as it is).
_NULL = "#N/A"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The CSV of a job upload: a header line, then one line per row (LF line endings)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


class _Job:
    """The HTTP calls of one ingest job, each under the connector's call policy."""

    def __init__(self, connector: BulkHost) -> None:
        self.connector = connector
        version = connector.settings.api_version
        connector.client()
        self.base = f"{connector.instance_url}/services/data/v{version}/jobs/ingest"

    def send(
        self,
        method: str,
        path: str,
        *,
        describe: str,
        idempotent: bool,
        content_type: str = "application/json",
        **kwargs: Any,
    ) -> requests.Response:
        connector = self.connector
        url = f"{self.base}{path}"

        def call() -> requests.Response:
            headers = {
                "Authorization": f"Bearer {connector.access_token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            }
            return connector.session.request(
                method, url, headers=headers, timeout=connector.settings.timeout_s, **kwargs
            )

        return connector.policy.execute(
            call,
            to_info=from_requests,
            idempotent=idempotent,
            reauth=connector._reauth,
            describe=describe,
        )


def run_ingest(
    connector: BulkHost,
    operation: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    external_id_field: str | None = None,
) -> tuple[list[tuple[str, bool, list[str]]], list[tuple[str, str, list[str]]], str]:
    """Run one ingest job; ``(successful, failed, final state)``.

    ``successful`` rows are ``(sf__Id, sf__Created, values)``, ``failed`` rows ``(sf__Id,
    sf__Error, values)``; values are the uploaded columns as strings.
    """
    job = _Job(connector)
    payload = to_csv(columns, rows)
    definition: dict[str, Any] = {
        "object": "Lead",
        "operation": operation,
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    if external_id_field:
        definition["externalIdFieldName"] = external_id_field
    attempts = 0
    while True:
        attempts += 1
        created = job.send(
            "POST",
            "",
            json=definition,
            describe=f"create a Bulk {operation} job of {len(rows)} Leads",
            idempotent=True,  # an unused Open job is harmless
        ).json()
        job_id = str(created["id"])
        try:
            job.send(
                "PUT",
                f"/{job_id}/batches",
                data=payload.encode("utf-8"),
                content_type="text/csv",
                describe=f"upload {len(rows)} rows to Bulk job {job_id}",
                idempotent=False,  # a second upload would add the rows twice
            )
            break
        except Retryable:
            _abort(job, job_id)
            if attempts >= connector.policy.retry.max_attempts:
                raise
    try:
        job.send(
            "PATCH",
            f"/{job_id}",
            json={"state": "UploadComplete"},
            describe=f"close Bulk job {job_id}",
            idempotent=True,
        )
    except ConnectorError as exc:
        if exc.status != 409:  # 409 INVALIDJOBSTATE: an earlier attempt closed it already
            raise
    state = _wait(connector, job, job_id)
    successful = [
        (row[0], row[1].lower() == "true", row[2:])
        for row in _results(job, job_id, "successfulResults")
    ]
    failed = [(row[0], row[1], row[2:]) for row in _results(job, job_id, "failedResults")]
    return successful, failed, state


def _abort(job: _Job, job_id: str) -> None:
    try:
        job.send(
            "PATCH",
            f"/{job_id}",
            json={"state": "Aborted"},
            describe=f"abort Bulk job {job_id}",
            idempotent=True,
        )
    except ConnectorError as exc:
        job.connector.policy.logger.warning("could not abort Bulk job %s: %s", job_id, exc)


def _wait(connector: BulkHost, job: _Job, job_id: str) -> str:
    start = time.monotonic()
    delay = connector.bulk_poll_s
    while True:
        info = job.send(
            "GET", f"/{job_id}", describe=f"poll Bulk job {job_id}", idempotent=True
        ).json()
        state = str(info.get("state"))
        if state in _DONE:
            if state != "JobComplete":
                connector.policy.logger.warning(
                    "Bulk job %s ended %s: %s", job_id, state, info.get("errorMessage", "")
                )
            return state
        if time.monotonic() - start + delay > connector.bulk_timeout_s:
            raise Retryable(
                f"Bulk job {job_id} still {state} after {connector.bulk_timeout_s:.0f}s",
                system=SYSTEM,
            )
        connector._sleep(delay)
        delay = min(_POLL_CAP_S, delay * 1.5)


def _results(job: _Job, job_id: str, kind: str) -> list[list[str]]:
    response = job.send(
        "GET", f"/{job_id}/{kind}", describe=f"read {kind} of Bulk job {job_id}", idempotent=True
    )
    reader = csv.reader(io.StringIO(response.content.decode("utf-8"), newline=""))
    rows = [row for row in reader if row]
    return rows[1:]


def _ingest_items(
    connector: BulkHost,
    items: Sequence[UpsertInput],
    indexes: Sequence[int],
    operation: str,
    results: list[WriteResult | None],
    *,
    ids: dict[int, str] | None = None,
    external_id_field: str | None = None,
) -> None:
    """Write ``items[indexes]`` in one job and fill their results."""
    extra = ["Id"] if ids is not None else []
    if external_id_field:
        extra = [external_id_field]
    columns = list(
        dict.fromkeys(
            [
                *extra,
                *(k for i in indexes for k in items[i].fields if k not in ("Id", *extra)),
            ]
        )
    )
    rows: list[list[str]] = []
    pending: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
    # An empty CSV value leaves a field as it is; a value cleared on purpose is #N/A when the
    # row may change an existing record (update, upsert), as null is on the REST path.
    cleared = _NULL if operation != "insert" else ""
    for index in indexes:
        values = dict(items[index].fields)
        if ids is not None:
            values["Id"] = ids[index]
        if external_id_field:
            values[external_id_field] = connector._external_value(items[index])
        row = [
            cleared if c in values and values[c] is None else _csv_value(values.get(c))
            for c in columns
        ]
        rows.append(row)
        pending[tuple(row)].append(index)
    successful, failed, state = run_ingest(
        connector, operation, columns, rows, external_id_field=external_id_field
    )
    for record_id, created, echoed in successful:
        queue = pending.get(tuple(echoed))
        if not queue:
            continue
        index = queue.popleft()
        outcome = WriteOutcome.CREATED if created else WriteOutcome.UPDATED
        results[index] = WriteResult(items[index].ref, record_id or None, outcome)
    for record_id, error, echoed in failed:
        queue = pending.get(tuple(echoed))
        if not queue:
            continue
        index = queue.popleft()
        ref = items[index].ref
        code, message, field = parse_bulk_error(error)
        if code == CONVERTED_LEAD:
            # A converted Lead is read-only and never meant to be written: nothing to do.
            results[index] = WriteResult(ref, record_id or None, WriteOutcome.UNCHANGED)
            continue
        rejected = Rejected(message, system=SYSTEM, record=ref, field=field, code=code)
        results[index] = WriteResult.failed(ref, rejected, record_id or None)
    unprocessed = sorted(index for queue in pending.values() for index in queue)
    if unprocessed:
        # A Failed or Aborted job leaves rows it never processed (unprocessedRecords): nothing
        # of them was written. They go the REST way, which writes each one or refuses it with
        # Salesforce's own message for that record (and retries what is transient), rather
        # than all of them being dead-lettered for the job's state.
        connector.policy.logger.warning(
            "%d Leads the Bulk %s job (%s) did not process are written through the REST API",
            len(unprocessed),
            operation,
            state,
        )
        written = connector._upsert_rest([items[i] for i in unprocessed])
        for index, result in zip(unprocessed, written, strict=True):
            results[index] = result


def _rounds(keys: Sequence[str]) -> list[list[int]]:
    """Index lists in which no key repeats; the n-th occurrence of a key goes to round n."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = defaultdict(int)
    for index, key in enumerate(keys):
        number = seen[key]
        seen[key] += 1
        while len(rounds) <= number:
            rounds.append([])
        rounds[number].append(index)
    return rounds


def upsert(connector: BulkHost, items: Sequence[UpsertInput]) -> list[WriteResult]:
    """Upsert ``items`` through Bulk API 2.0; one result per input, in order.

    With ``external_id_field``: one ``upsert`` job per round of distinct keys. Without: the
    emails are looked up (batched), then an ``insert`` job for the new Leads and an ``update``
    job for the existing ones. Existing Contacts are refused as in the REST path.
    """

    results: list[WriteResult | None] = [None] * len(items)
    ext = connector.settings.external_id_field
    if ext:
        customers = connector._existing_customers(items)
        for index, row in customers.items():
            results[index] = customer_result(items[index], row)
        keys = [connector._external_value(item).lower() for item in items]
        for round_ in _rounds(keys):
            todo = [i for i in round_ if results[i] is None]
            if todo:
                _ingest_items(connector, items, todo, "upsert", results, external_id_field=ext)
        return _finish(results)
    emails = [normalize_email(str(item.fields.get("Email") or "")) for item in items]
    for index, email in enumerate(emails):
        if not email and not items[index].external_id:
            ref = items[index].ref
            results[index] = WriteResult.failed(
                ref,
                Rejected(
                    "the record has no Email to find its Lead by (and no Salesforce id)",
                    system=SYSTEM,
                    record=ref,
                    field="Email",
                ),
            )
    keys = [email or f"id:{items[i].external_id}" for i, email in enumerate(emails)]
    for round_ in _rounds(keys):
        todo = [i for i in round_ if results[i] is None]
        found = connector._find_by_email([emails[i] for i in todo if emails[i]])
        updates: dict[int, str] = {}
        creates: list[int] = []
        for index in todo:
            known = items[index].external_id
            match = found.get(emails[index]) if emails[index] else None
            if known:
                updates[index] = known
            elif match is None:
                creates.append(index)
            elif is_customer(match):
                results[index] = customer_result(items[index], match)
            else:
                updates[index] = str(match["Id"])
        if creates:
            _ingest_items(connector, items, creates, "insert", results)
            # As on the REST path: a Lead just created is what the next upsert of its e-mail
            # finds (within the look-up window), so it is updated and not created twice.
            made = {
                emails[i]: {
                    "attributes": {"type": "Lead"},
                    "Id": done.external_id,
                    "Email": emails[i],
                }
                for i in creates
                if (done := results[i]) is not None and done.ok and done.external_id
            }
            if made:
                connector._remember(list(made), made, time.monotonic())
        if updates:
            _ingest_items(connector, items, list(updates), "update", results, ids=updates)
    return _finish(results)


def _finish(results: list[WriteResult | None]) -> list[WriteResult]:
    if any(r is None for r in results):
        raise Fatal("the Bulk job left inputs without a result", system=SYSTEM)
    return [r for r in results if r is not None]
