"""``HubSpotConnector.account_owners`` against the sandbox's companies."""

from __future__ import annotations

from collections import Counter

import pytest

from leadrelay.connectors.errors import AuthError, Retryable
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.hubspot import HubSpotEmulator
from leadrelay.sandbox.server import SandboxServer
from tests.connectors.hubspot.conftest import MakeConnector, oauth_settings, private_app_settings

LIST_ROUTE = "GET /hubspot/crm/v3/objects/companies"
ALEX, BEA, CHIDI = "61000001", "61000002", "61000003"
#: 2024-06-03T07:33:20Z, in seconds
T0 = 1_717_400_000.0


def add_company(emulator: HubSpotEmulator, at: float = T0, **properties: str) -> str:
    """A company created in the emulator at ``at`` (epoch seconds), as a portal user would."""
    with emulator.lock:
        emulator.store.clock = lambda: at
        return str(emulator.companies.create({"properties": properties}).id)


def list_calls(server: SandboxServer) -> int:
    with server.sandbox.lock:
        return Counter(server.sandbox.stats.by_route)[LIST_ROUTE]


def test_every_company_with_a_domain_and_an_owner_is_listed_oldest_first(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    add_company(emulator, T0 + 3, name="Late", domain="late.example", hubspot_owner_id=BEA)
    add_company(emulator, T0 + 1, name="Early", domain="Early.Example", hubspot_owner_id=ALEX)
    add_company(emulator, T0 + 2, name="Middle", domain="middle.example", hubspot_owner_id=CHIDI)
    assert make_connector().account_owners() == [
        ("Early.Example", ALEX),
        ("middle.example", CHIDI),
        ("late.example", BEA),
    ]


def test_companies_created_at_the_same_moment_are_in_id_order(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    for n in range(3):
        add_company(emulator, domain=f"same{n}.example", hubspot_owner_id=ALEX)
    domains = [domain for domain, _ in make_connector().account_owners()]
    assert domains == ["same0.example", "same1.example", "same2.example"]


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"domain": "acme.example", "website": "https://www.acme.example/"}, "acme.example"),
        ({"website": "https://www.acme.example/"}, "https://www.acme.example/"),
        ({"domain": "  ", "website": "www.acme.example"}, "www.acme.example"),
    ],
    ids=["domain first", "website when no domain", "website when the domain is blank"],
)
def test_the_domain_is_taken_before_the_website(
    make_connector: MakeConnector,
    emulator: HubSpotEmulator,
    properties: dict[str, str],
    expected: str,
) -> None:
    add_company(emulator, name="Acme", hubspot_owner_id=BEA, **properties)
    assert make_connector().account_owners() == [(expected, BEA)]


@pytest.mark.parametrize(
    "properties",
    [
        {"name": "No owner", "domain": "noowner.example"},
        {"name": "No site", "hubspot_owner_id": ALEX},
        {"name": "Blank site", "domain": " ", "hubspot_owner_id": ALEX},
    ],
    ids=["no owner", "no domain or website", "blank domain, no website"],
)
def test_a_company_without_an_owner_or_a_site_is_skipped(
    make_connector: MakeConnector, emulator: HubSpotEmulator, properties: dict[str, str]
) -> None:
    add_company(emulator, **properties)
    add_company(emulator, T0 + 1, domain="kept.example", hubspot_owner_id=CHIDI)
    assert make_connector().account_owners() == [("kept.example", CHIDI)]


def test_an_archived_company_is_skipped(
    make_connector: MakeConnector, emulator: HubSpotEmulator
) -> None:
    gone = add_company(emulator, domain="gone.example", hubspot_owner_id=ALEX)
    with emulator.lock:
        emulator.companies.archive(gone)
    assert make_connector().account_owners() == []


def test_more_than_a_page_is_read_in_pages_of_100(
    make_connector: MakeConnector, emulator: HubSpotEmulator, server: SandboxServer
) -> None:
    owners = (ALEX, BEA, CHIDI)
    for n in range(250):
        add_company(emulator, T0 + n, domain=f"c{n:03d}.example", hubspot_owner_id=owners[n % 3])
    found = make_connector().account_owners()
    assert found == [(f"c{n:03d}.example", owners[n % 3]) for n in range(250)]
    assert list_calls(server) == 3


def test_an_empty_portal_costs_one_call(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    assert make_connector().account_owners() == []
    assert list_calls(server) == 1


def test_it_works_with_an_oauth_connection(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    add_company(emulator, domain="oauth.example", hubspot_owner_id=ALEX)
    connector = make_connector(oauth_settings(server.env()))
    assert connector.account_owners() == [("oauth.example", ALEX)]
    assert connector.token_refreshes == 1


def test_failures_are_retried_then_typed(
    make_connector: MakeConnector, server: SandboxServer, emulator: HubSpotEmulator
) -> None:
    server.sandbox.set_faults(Faults(error_rate=1.0, systems=["hubspot"]))
    with pytest.raises(Retryable) as raised:
        make_connector().account_owners()
    assert raised.value.status == 503
    assert list_calls(server) == 6  # FAST_RETRY's max_attempts


def test_a_wrong_token_is_an_auth_error_without_the_token(
    make_connector: MakeConnector, server: SandboxServer
) -> None:
    wrong = "pat-na1-00000000-0000-0000-0000-wrongwrong00"
    settings = private_app_settings(server.env(), access_token=wrong)
    with pytest.raises(AuthError) as raised:
        make_connector(settings).account_owners()
    assert raised.value.status == 401
    assert wrong not in str(raised.value) + repr(raised.value)
