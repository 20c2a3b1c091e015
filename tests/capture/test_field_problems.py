"""A captured lead is never held back by one optional value its CRM refuses (DESIGN §7.7)."""

from __future__ import annotations

from leadrelay.capture.worker import RECHECK_EVERY_S, drain_inbox
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.engine import ConnectorPool
from tests.capture.sandbox_project import Project, admin
from tests.hubspot_sandbox import restore_job_title
from tests.postgres import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


def _post(project: Project, **fields: str) -> None:
    with project.client() as client:
        response = project.post_webform(client, **fields)
    assert response.status_code == 202, response.text


def _deliver_without_job_title_then_restore_it(project: Project, sandbox: SandboxServer) -> None:
    """A lead with a job title delivered while HubSpot has no jobtitle property (so it is left
    out as a field problem), then the property is back."""
    admin(sandbox, "schema", {"system": "hubspot", "remove_field": "jobtitle"})
    _post(project, email="cto@acme.io", last_name="Silva", job_title="CTO")
    drain_inbox(project.config, project.store, connectors=project.pool)
    restore_job_title(sandbox)


def test_a_field_missing_from_the_crm_is_left_out_and_the_lead_delivered(
    project: Project, sandbox: SandboxServer
) -> None:
    admin(sandbox, "schema", {"system": "hubspot", "remove_field": "jobtitle"})
    _post(project, email="cto@acme.io", last_name="Silva", job_title="CTO")
    stats = drain_inbox(project.config, project.store, connectors=project.pool)
    assert (stats.delivered, stats.dead_lettered, stats.field_problems) == (1, 0, 1)
    record = project.lookup("hubspot", "cto@acme.io")
    assert record is not None and record["lastname"] == "Silva"
    [problem] = project.store.field_problems()
    assert (problem.connection, problem.field, problem.system_field, problem.value) == (
        "hubspot",
        "job_title",
        "jobtitle",
        "CTO",
    )
    assert "jobtitle" in problem.reason
    assert project.store.list_dead_letters() == []


def test_the_field_problem_closes_when_a_later_delivery_carries_the_field(
    project: Project, sandbox: SandboxServer
) -> None:
    _deliver_without_job_title_then_restore_it(project, sandbox)
    _post(project, email="cto@acme.io", last_name="Silva", job_title="VP")
    drain_inbox(project.config, project.store, connectors=project.pool)
    assert project.store.field_problems() == []
    record = project.lookup("hubspot", "cto@acme.io")
    assert record is not None and record["jobtitle"] == "VP"


def test_a_captured_lead_is_sent_again_by_itself_once_the_crm_takes_the_value(
    project: Project, sandbox: SandboxServer
) -> None:
    _deliver_without_job_title_then_restore_it(project, sandbox)
    # a later process (its connectors read HubSpot's properties afresh) delivers it again
    with ConnectorPool(project.config) as later:
        stats = drain_inbox(project.config, project.store, connectors=later)
    assert stats.delivered == 1
    assert project.store.field_problems() == []
    record = project.lookup("hubspot", "cto@acme.io")
    assert record is not None and record["jobtitle"] == "CTO"


def test_a_service_rechecks_open_field_problems_at_most_once_a_minute(
    project: Project, sandbox: SandboxServer
) -> None:
    _deliver_without_job_title_then_restore_it(project, sandbox)  # rechecked: none open yet
    with ConnectorPool(project.config) as later:
        # a service's next pass, seconds later: not rechecked yet
        soon = drain_inbox(
            project.config, project.store, connectors=later, recheck_every_s=RECHECK_EVERY_S
        )
        due = drain_inbox(project.config, project.store, connectors=later, recheck_every_s=0)
    assert (soon.delivered, due.delivered) == (0, 1)
