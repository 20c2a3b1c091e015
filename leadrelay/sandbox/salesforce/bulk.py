"""Bulk API 2.0 ingest and query jobs over the emulated org (crm-api-facts §2 "Bulk API 2.0").

Jobs run at once: ``PATCH {state: UploadComplete}`` processes the uploaded CSV and the job reads
``JobComplete`` on the next GET (a query job is complete as soon as it is created). The CSV
dialects follow the job's ``columnDelimiter`` and ``lineEnding``; results are CSV with every
value quoted, as Salesforce writes them.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from leadrelay.sandbox.salesforce import soql
from leadrelay.sandbox.salesforce.schema import format_datetime, make_id, normalize_id
from leadrelay.sandbox.salesforce.store import (
    MultipleMatches,
    OrgStore,
    Problem,
    RecordError,
)

DELIMITERS = {
    "COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`",
}  # fmt: skip
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = {"insert", "upsert", "update", "delete", "hardDelete"}
QUERY_OPERATIONS = {"query", "queryAll"}


class BulkError(Exception):
    """A refused bulk request: HTTP status and one Salesforce error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Job:
    """One Bulk API 2.0 job (ingest or query)."""

    id: str
    kind: str  # "ingest" or "query"
    operation: str
    object: str
    created_by: str
    created: datetime
    modstamp: datetime
    version: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    external_id_field: str | None = None
    state: str = "Open"
    error_message: str | None = None
    uploads: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    successful: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    failed: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    query: str = ""
    result_columns: list[str] = field(default_factory=list)
    result_rows: list[list[str]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The job info body of ``GET /jobs/{ingest|query}/{id}``."""
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": format_datetime(self.created),
            "systemModstamp": format_datetime(self.modstamp),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "jobType": "V2Ingest" if self.kind == "ingest" else "V2Query",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "retries": 0,
            "totalProcessingTime": 0,
        }
        if self.kind == "ingest":
            body["externalIdFieldName"] = self.external_id_field
            body["contentUrl"] = f"services/data/v{self.version}/jobs/ingest/{self.id}/batches"
            body["numberRecordsProcessed"] = len(self.successful) + len(self.failed)
            body["numberRecordsFailed"] = len(self.failed)
            body["apiActiveProcessingTime"] = 0
            body["apexProcessingTime"] = 0
        else:
            body["numberRecordsProcessed"] = len(self.result_rows)
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


class BulkJobs:
    """The org's Bulk API 2.0 jobs; the caller holds the emulator lock around every call."""

    def __init__(self, store: OrgStore) -> None:
        self.store = store
        self.jobs: dict[str, Job] = {}
        self._sequence = 0

    def _new_job(self, kind: str, body: Any, user_id: str, version: str) -> Job:
        if not isinstance(body, dict):
            raise BulkError(400, "JSON_PARSER_ERROR", "The job definition must be a JSON object")
        operation = body.get("operation")
        allowed = INGEST_OPERATIONS if kind == "ingest" else QUERY_OPERATIONS
        if operation not in allowed:
            raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in DELIMITERS or line_ending not in LINE_ENDINGS:
            raise BulkError(400, "INVALIDJOB", "InvalidJob : Invalid columnDelimiter or lineEnding")
        if body.get("contentType", "CSV") != "CSV":
            raise BulkError(400, "INVALIDJOB", "InvalidJob : Only CSV content is supported")
        self._sequence += 1
        stamp = self.store.stamp()
        return Job(
            id=make_id("750", self._sequence),
            kind=kind,
            operation=str(operation),
            object="",
            created_by=user_id,
            created=stamp,
            modstamp=stamp,
            version=version,
            column_delimiter=str(delimiter),
            line_ending=str(line_ending),
        )

    def get(self, kind: str, job_id: str) -> Job:
        """A job by id, or 404 NOT_FOUND."""
        job = self.jobs.get(normalize_id(job_id) or job_id)
        if job is None or job.kind != kind:
            raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def list_jobs(self, kind: str) -> dict[str, Any]:
        """``GET /jobs/{kind}``."""
        records = [job.info() for job in self.jobs.values() if job.kind == kind]
        return {"done": True, "records": records, "nextRecordsUrl": None}

    def delete(self, kind: str, job_id: str) -> None:
        """``DELETE /jobs/{kind}/{id}``; only finished jobs can be deleted."""
        job = self.get(kind, job_id)
        if job.state not in ("JobComplete", "Failed", "Aborted"):
            raise BulkError(400, "INVALIDJOBSTATE", f"Job {job.id} is not in a deletable state")
        del self.jobs[job.id]

    # --- ingest ------------------------------------------------------------------------------

    def create_ingest(self, body: Any, user_id: str, version: str) -> Job:
        """``POST /jobs/ingest``: a new Open job."""
        job = self._new_job("ingest", body, user_id, version)
        sobject = self.store.sobject(str(body.get("object", "")))
        if sobject is None:
            raise BulkError(
                400, "INVALIDJOB", f"InvalidJob : Unable to find object: {body.get('object')}"
            )
        job.object = sobject.name
        if job.operation == "upsert":
            name = body.get("externalIdFieldName")
            if not isinstance(name, str) or not name:
                raise BulkError(400, "INVALIDJOB", "InvalidJob : External ID was blank for upsert")
            try:
                job.external_id_field = self.store.upsert_key(sobject, name).name
            except RecordError:
                raise BulkError(
                    400, "INVALIDJOB", f"InvalidJob : Field name not found : {name}"
                ) from None
        self.jobs[job.id] = job
        return job

    def upload(self, job_id: str, data: bytes) -> None:
        """``PUT /jobs/ingest/{id}/batches``."""
        job = self.get("ingest", job_id)
        if job.state != "Open":
            raise BulkError(409, "INVALIDJOBSTATE", f"Job {job.id} is not in the Open state")
        try:
            job.uploads.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BulkError(400, "INVALIDBATCH", "InvalidBatch : The data is not UTF-8") from None

    def set_state(self, job_id: str, body: Any, user_id: str) -> Job:
        """``PATCH /jobs/ingest/{id}``: UploadComplete runs the job; Aborted stops it."""
        job = self.get("ingest", job_id)
        state = body.get("state") if isinstance(body, dict) else None
        if state not in ("UploadComplete", "Aborted"):
            raise BulkError(400, "INVALIDJOBSTATE", f"Invalid state: {state}")
        if job.state != "Open":
            raise BulkError(409, "INVALIDJOBSTATE", f"Job {job.id} is not in the Open state")
        job.modstamp = self.store.stamp()
        if state == "Aborted":
            job.state = "Aborted"
            return job
        self._run_ingest(job, user_id)
        return job

    def _run_ingest(self, job: Job, user_id: str) -> None:
        sobject = self.store.schema[job.object]
        delimiter = DELIMITERS[job.column_delimiter]
        rows: list[list[str]] = []
        for upload in job.uploads:
            reader = csv.reader(io.StringIO(upload, newline=""), delimiter=delimiter)
            chunk = [row for row in reader if row]
            if not chunk:
                continue
            if not job.columns:
                job.columns = chunk[0]
            rows.extend(chunk[1:])
        if not job.columns:
            job.state, job.error_message = "Failed", "InvalidBatch : Empty CSV"
            return
        for name in job.columns:
            if sobject.field(name) is None:
                job.state = "Failed"
                job.error_message = f"InvalidBatch : Field name not found : {name}"
                job.unprocessed = rows
                return
        if job.operation in ("delete", "hardDelete") and [c.lower() for c in job.columns] != ["id"]:
            job.state = "Failed"
            job.error_message = "InvalidBatch : The 'delete' batch must contain only ids"
            job.unprocessed = rows
            return
        key = job.external_id_field
        if key is not None and key.lower() not in (c.lower() for c in job.columns):
            job.state = "Failed"
            job.error_message = f"InvalidBatch : Field name not found : {key}"
            job.unprocessed = rows
            return
        job.state = "InProgress"
        for row in rows:
            self._ingest_row(job, sobject.name, row, user_id)
        job.state = "JobComplete"
        job.modstamp = self.store.stamp()

    def _ingest_row(self, job: Job, object_name: str, row: list[str], user_id: str) -> None:
        sobject = self.store.schema[object_name]
        store = self.store
        if len(row) != len(job.columns):
            problem = Problem("INVALID_FIELD", "Number of columns does not match the header")
            job.failed.append(("", problem.bulk(), row))
            return
        raw: dict[str, str] = dict(zip(job.columns, row, strict=True))
        record_id = ""
        try:
            values = store.deserialize_csv(sobject, raw)
            record_id = str(values.pop("Id", None) or "")
            if job.operation == "insert":
                record_id = store.create(sobject, values, user_id)
                job.successful.append((record_id, True, row))
            elif job.operation == "update":
                store.update(sobject, record_id, values, user_id)
                job.successful.append((record_id, False, row))
            elif job.operation == "upsert":
                key = store.schema[object_name].fields[job.external_id_field or "Id"]
                value = record_id if key.name == "Id" else values.pop(key.name, None)
                if value is None:
                    raise RecordError(Problem("MISSING_ARGUMENT", f"{key.name} not specified"))
                record_id, created = store.upsert(sobject, key, value, values, user_id)
                job.successful.append((record_id, created, row))
            else:
                store.delete(sobject, record_id)
                job.successful.append((record_id, False, row))
        except MultipleMatches as exc:
            problem = Problem(
                "DUPLICATE_EXTERNAL_ID",
                f"{job.external_id_field}: more than one record found for external id field: "
                f"[{', '.join(exc.ids)}]",
                [job.external_id_field or ""],
            )
            job.failed.append(("", problem.bulk(), row))
        except RecordError as exc:
            job.failed.append((record_id, exc.problem.bulk(), row))

    def ingest_results(self, job_id: str, kind: str) -> str:
        """``successfulResults`` / ``failedResults`` / ``unprocessedrecords`` as CSV."""
        job = self.get("ingest", job_id)
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if kind == "successfulresults":
            writer.writerow(["sf__Id", "sf__Created", *job.columns])
            for record_id, created, row in job.successful:
                writer.writerow([record_id, "true" if created else "false", *row])
        elif kind == "failedresults":
            writer.writerow(["sf__Id", "sf__Error", *job.columns])
            for record_id, error, row in job.failed:
                writer.writerow([record_id, error, *row])
        else:
            writer.writerow(job.columns)
            pending = job.unprocessed
            if job.state in ("Open", "Aborted") and not pending:
                pending = _rows_of(job)
            for row in pending:
                writer.writerow(row)
        return out.getvalue()

    # --- query -------------------------------------------------------------------------------

    def create_query(self, body: Any, user_id: str, version: str) -> Job:
        """``POST /jobs/query``: runs the SOQL at once (errors are the query's errors)."""
        job = self._new_job("query", body, user_id, version)
        text = body.get("query")
        if not isinstance(text, str) or not text.strip():
            raise BulkError(400, "INVALIDJOB", "InvalidJob : query is required")
        try:
            bound = soql.compile_query(text, self.store.schema, self.store.resolve)
        except soql.SoqlError as exc:
            raise BulkError(400, exc.error_code, exc.message) from None
        if bound.count_only:
            raise BulkError(
                400, "INVALIDJOB", "InvalidJob : Aggregate queries are not supported by Bulk API"
            )
        include_deleted = job.operation == "queryAll"
        rows = [
            record
            for record in self.store.candidates(
                bound.sobject, bound.hints, include_deleted=include_deleted
            )
            if (include_deleted or not record.get("IsDeleted")) and bound.matches(record)
        ]
        flat = [bound.flat_row(record) for record in bound.order(rows)]
        job.object = bound.sobject.name
        job.query = text
        job.result_columns = [
            c.spec.name if c.relationship is None else f"{c.relationship}.{c.spec.name}"
            for c in bound.columns
        ]
        job.result_rows = [[_csv_value(row[c]) for c in job.result_columns] for row in flat]
        job.state = "JobComplete"
        self.jobs[job.id] = job
        return job

    def query_results(
        self, job_id: str, locator: str | None, max_records: int | None
    ) -> tuple[str, str, int]:
        """One page of query results: (CSV, next locator or "null", number of records)."""
        job = self.get("query", job_id)
        if job.state != "JobComplete":
            raise BulkError(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete")
        start = 0
        if locator:
            try:
                start = int(base64.b64decode(locator.encode() + b"==").decode())
            except (ValueError, UnicodeDecodeError):
                raise BulkError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None
        size = max_records if max_records and max_records > 0 else 50_000
        page = job.result_rows[start : start + size]
        end = start + len(page)
        out = io.StringIO()
        delimiter = DELIMITERS[job.column_delimiter]
        writer = csv.writer(
            out,
            delimiter=delimiter,
            quoting=csv.QUOTE_ALL,
            lineterminator=LINE_ENDINGS[job.line_ending],
        )
        writer.writerow(job.result_columns)
        writer.writerows(page)
        if end < len(job.result_rows):
            next_locator = base64.b64encode(str(end).encode()).decode().rstrip("=")
        else:
            next_locator = "null"
        return out.getvalue(), next_locator, len(page)

    def abort_query(self, job_id: str, body: Any) -> Job:
        """``PATCH /jobs/query/{id}`` with ``{state: Aborted}``."""
        job = self.get("query", job_id)
        if not isinstance(body, dict) or body.get("state") != "Aborted":
            raise BulkError(400, "INVALIDJOBSTATE", "Only Aborted can be set on a query job")
        if job.state != "JobComplete":
            job.state = "Aborted"
        return job


def _rows_of(job: Job) -> list[list[str]]:
    delimiter = DELIMITERS[job.column_delimiter]
    rows: list[list[str]] = []
    for upload in job.uploads:
        chunk = [r for r in csv.reader(io.StringIO(upload, newline=""), delimiter=delimiter) if r]
        rows.extend(chunk[1:])
    return rows


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value).replace("+0000", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
