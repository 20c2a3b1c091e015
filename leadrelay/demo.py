"""``leadrelay demo``: what leadrelay does to a lead list, on data shipped in the package.

It reads ``leadrelay/data/sample_leads.csv``, turns every row into the canonical Lead (a row that
cannot be repaired is rejected with its field and reason, never dropped silently), tags each
lead's attribution from its landing page and referrer, and clusters the duplicates with the
reason each matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from leadrelay.model import Lead
from leadrelay.sync.csvfile import LeadRow, read_lead_rows
from leadrelay.sync.dedupe import Cluster, DedupeRecord, find_clusters
from leadrelay.sync.tagging import apply_touch, tag_url

#: Columns of the sample list that are not Lead fields but feed attribution.
_TOUCH_COLUMNS = ("page_url", "referrer")


@dataclass
class DemoResult:
    """What the demo found: leads built, rows rejected (with reasons) and duplicate clusters."""

    leads: dict[int, Lead] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)


def sample_path() -> Path:
    """The sample lead list shipped in the package."""
    return Path(str(resources.files("leadrelay") / "data" / "sample_leads.csv"))


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'row'}: {item['msg']}"
        for item in error.errors()
    )


def run(path: Path | None = None) -> DemoResult:
    """Build, tag and dedupe every lead of the list at ``path`` (default: the sample)."""
    result = DemoResult()
    records: list[DedupeRecord] = []
    for row in read_lead_rows(
        path or sample_path(), required=("email",), extra_columns=("page_url",)
    ):
        if not isinstance(row, LeadRow):
            result.rejected.append((row.row_number, row.reason))
            continue
        values = dict(row.values)
        touch = {name: values.pop(name, None) for name in _TOUCH_COLUMNS}
        try:
            lead = Lead.model_validate({k: v for k, v in values.items() if v not in ("", None)})
        except ValidationError as exc:
            result.rejected.append((row.row_number, _problems(exc)))
            continue
        apply_touch(lead, tag_url(touch["page_url"], touch["referrer"]))
        result.leads[row.row_number] = lead
        records.append(DedupeRecord.from_lead(lead, row=row.row_number))
    result.clusters = find_clusters(records)
    return result


def render(result: DemoResult, console: Console) -> None:
    """Print the demo's tables: leads with their channel, rejected rows, duplicate clusters."""
    leads = Table(title="Leads, normalized and tagged")
    for column in ("row", "email", "phone", "company domain", "channel", "campaign"):
        leads.add_column(column, overflow="fold")
    for row_number, lead in sorted(result.leads.items()):
        leads.add_row(
            str(row_number),
            lead.email or "-",
            lead.phone or "-",
            lead.company_domain or "-",
            lead.channel.value if lead.channel else "-",
            lead.utm_campaign or "-",
        )
    console.print(leads)
    if result.rejected:
        rejected = Table(title="Rows rejected (field: reason)")
        rejected.add_column("row")
        rejected.add_column("reason", overflow="fold")
        for row_number, reason in result.rejected:
            rejected.add_row(str(row_number), reason)
        console.print(rejected)
    clusters = Table(title="Duplicates")
    clusters.add_column("rows")
    clusters.add_column("emails", overflow="fold")
    clusters.add_column("why", overflow="fold")
    for cluster in result.clusters:
        emails = ", ".join(
            result.leads[row].email or "-" for row in cluster.rows if row in result.leads
        )
        clusters.add_row(", ".join(str(row) for row in cluster.rows), emails, cluster.reason)
    console.print(clusters)
    people = len(result.leads) - sum(len(cluster.rows) - 1 for cluster in result.clusters)
    console.print(
        f"{len(result.leads)} leads accepted, {len(result.rejected)} rejected with a reason, "
        f"{len(result.clusters)} duplicate clusters -> {people} distinct people"
    )
