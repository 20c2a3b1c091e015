"""A model-based test of two-way sync on the sandbox (issue 12): random operations on HubSpot,
Salesforce and Zoho through their APIs, interleaved with syncs (some killed halfway), checked
against a small reference model after each quiet sync (see :mod:`tests.sync.sync_model`).

A bounded run is part of ``make test``; ``make soak`` runs the same machine for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.stateful import run_state_machine_as_test

from leadrelay.sandbox.server import SandboxServer
from tests.sync.sync_model import (
    FIELDS,
    HUBSPOT,
    SALESFORCE,
    SYSTEMS,
    ZOHO,
    PropagatingSyncMachine,
    TwoWaySyncMachine,
    stories,
)

pytestmark = pytest.mark.slow

#: Small enough for every ``make test``: a few short stories of a handful of leads.
BOUNDED = stories(examples=5, steps=12, derandomize=True)

#: More than the whole seconds of Zoho's Modified_Time: edits this far apart are ordered.
APART_S = 1.2


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(ca_dir=tmp_path_factory.mktemp("ca")) as running:
        yield running


def machine_on(
    sandbox: SandboxServer, workdir: Path, base: type[TwoWaySyncMachine] = TwoWaySyncMachine
) -> type[TwoWaySyncMachine]:
    class Machine(base):  # type: ignore[valid-type,misc]
        pass

    Machine.sandbox = sandbox
    Machine.workdir = workdir
    return Machine


@pytest.fixture
def driver(sandbox: SandboxServer, tmp_path: Path) -> Iterator[TwoWaySyncMachine]:
    """The machine's rules, driven one by one (a story the random runs may not reach)."""
    machine = machine_on(sandbox, tmp_path)()
    yield machine
    machine.teardown()


def test_two_way_sync_matches_the_reference_model(sandbox: SandboxServer, tmp_path: Path) -> None:
    run_state_machine_as_test(machine_on(sandbox, tmp_path), settings=BOUNDED)


def test_two_way_sync_with_propagated_deletes_matches_the_reference_model(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run_state_machine_as_test(
        machine_on(sandbox, tmp_path, PropagatingSyncMachine), settings=BOUNDED
    )


def test_a_hubspot_merge_of_two_synced_leads_matches_the_model(driver: TwoWaySyncMachine) -> None:
    driver.create_contact("Ann", "Lee", None, "Paris", None, "google")
    driver.create_contact("Bo", "Ng", "Acme", None, "+14155550101", None)
    driver.sync()
    first, second = driver.leads
    driver.edit(first, SALESFORCE, "job_title", "Buyer")  # not yet synced when merged
    driver.merge(second, first)  # the second contact is the primary
    driver.sync()
    driver.edit(first, SALESFORCE, "city", "Osaka")  # its contact is gone: stays in Salesforce
    driver.edit(second, HUBSPOT, "city", "Lagos")  # the merged contact still syncs
    driver.sync()
    assert driver.leads[1].values[ZOHO]["city"] == "Lagos"


def test_a_merge_into_a_contact_never_synced_continues_the_synced_lead(
    driver: TwoWaySyncMachine,
) -> None:
    driver.create_contact("Ann", "Lee", None, "Paris", None, "google")
    driver.sync()
    driver.create_contact("Bo", "Ng", "Acme", None, None, None)
    synced, unseen = driver.leads
    driver.edit(synced, ZOHO, "phone", "+14155550199")  # not yet synced when merged
    driver.merge(unseen, synced)  # the contact leadrelay never saw is the primary
    driver.sync()  # checks: one record per CRM, now under the primary's e-mail
    assert unseen.ids[SALESFORCE] == synced.ids[SALESFORCE]


def test_a_zoho_merge_is_a_deletion_of_the_duplicate_and_an_edit_of_the_master(
    driver: TwoWaySyncMachine,
) -> None:
    driver.create_contact("Ann", "Lee", None, "Paris", None, "google")
    driver.create_contact("Bo", "Ng", "Acme", "Osaka", None, None)
    driver.sync()
    master, duplicate = driver.leads
    driver.merge_zoho(master, duplicate, {"city", "company"})
    driver.sync()  # checks: master's new values everywhere, the duplicate left in HubSpot
    assert master.values[HUBSPOT]["city"] == "Osaka"
    assert duplicate.live(HUBSPOT) and not duplicate.live(ZOHO)


@pytest.mark.parametrize("won", [False, True])
def test_a_lead_converted_in_salesforce_is_frozen_there_and_synced_elsewhere(
    driver: TwoWaySyncMachine, won: bool
) -> None:
    driver.create_contact("Ann", "Lee", "Acme", "Paris", None, "google")
    driver.sync()
    [lead] = driver.leads
    driver.convert(lead, won=won)
    driver.sync()  # checks: the Opportunity's stage in Salesforce, one record everywhere
    driver.edit(lead, HUBSPOT, "city", "Osaka")
    driver.sync()  # checks: Zoho follows HubSpot, the converted Lead keeps Paris
    assert lead.values[SALESFORCE]["city"] == "Paris"
    assert lead.values[ZOHO]["city"] == "Osaka"


def test_a_converted_leads_contact_edit_reaches_marketing_and_reverts_nothing(
    driver: TwoWaySyncMachine,
) -> None:
    driver.create_contact("Ann", "Lee", "Acme", "Paris", None, "google")
    driver.sync()
    [lead] = driver.leads
    driver.convert(lead, won=False)
    driver.sync()
    driver.edit(lead, HUBSPOT, "city", "Osaka")  # not carried to the frozen Lead
    driver.sync()
    time.sleep(APART_S)
    driver.edit_contact(lead, "job_title", "VP Sales")
    driver.sync()  # checks: the Contact's title everywhere, HubSpot's city kept
    assert lead.values[HUBSPOT]["job_title"] == lead.values[ZOHO]["job_title"] == "VP Sales"
    assert lead.values[HUBSPOT]["city"] == "Osaka"
    assert lead.values[SALESFORCE]["city"] == "Paris"


def test_a_field_edited_in_all_three_systems_ends_with_the_latest_edit(
    driver: TwoWaySyncMachine,
) -> None:
    driver.create_contact("Ann", "Lee", "Acme", "Paris", None, None)
    driver.sync()
    [lead] = driver.leads
    for system, city in ((HUBSPOT, "Osaka"), (SALESFORCE, "Austin"), (ZOHO, "Kraków")):
        time.sleep(APART_S)
        driver.write(system, lead.ids[system], {FIELDS["city"][system]: city})
    code, _ = driver.run_sync()
    records = driver.records()
    cities = {s: driver.canonical(s, records[s][lead.email][0])["city"] for s in SYSTEMS}
    assert code == 0
    assert cities == dict.fromkeys(SYSTEMS, "Kraków")
