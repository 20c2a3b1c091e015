"""The Salesforce emulator checked with clients nobody on this project wrote (issue #23).

- Authlib's ``OAuth2Session`` (requests integration) runs the refresh-token grant and the
  web-server flow with PKCE (S256) exactly as a connected app's code would, pointed at the
  sandbox's ``/services/oauth2/*`` instead of ``login.salesforce.com``.
- simple-salesforce, used as its README shows (``Salesforce(instance_url=…, session_id=…)``,
  ``sf.Lead.create``, ``sf.query_all``), reads and writes records.
- ``requests`` and a raw TLS socket check what actually goes on the wire (bytes that are not
  UTF-8, header-name casing).
"""

from __future__ import annotations

import gc
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.salesforce import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_REFRESH_TOKEN,
    SalesforceEmulator,
)
from leadrelay.sandbox.server import SandboxServer

Client = Any
REDIRECT = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[SalesforceEmulator]) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(server: SandboxServer) -> None:
    server.sandbox.set_faults(Faults())
    server.sandbox.reset()


@pytest.fixture
def oauth(server: SandboxServer) -> Iterator[OAuth2Session]:
    """A connected app's OAuth client (Authlib), trusting the sandbox CA."""
    client = OAuth2Session(
        SANDBOX_CONSUMER_KEY,
        SANDBOX_CONSUMER_SECRET,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
    )
    client.verify = str(server.ca_bundle)
    client.trust_env = False
    yield client
    client.close()
    gc.collect()


@pytest.fixture
def sf(server: SandboxServer, oauth: OAuth2Session) -> Client:
    """simple-salesforce on a session from the refresh-token grant, as its README shows."""
    token = oauth.refresh_token(
        f"{server.url}/services/oauth2/token", refresh_token=SANDBOX_REFRESH_TOKEN
    )
    session = requests.Session()
    session.verify = str(server.ca_bundle)
    session.trust_env = False
    return Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], session=session
    )


def _error(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    content = exc.value.content
    assert isinstance(content, list)
    return dict(content[0])


# --- OAuth: refresh token, web-server flow with PKCE ------------------------------------------


def test_refresh_token_grant_gives_a_session_simple_salesforce_can_use(sf: Client) -> None:
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0


def test_refresh_token_grant_answers_the_token_shape(
    server: SandboxServer, oauth: OAuth2Session
) -> None:
    token = oauth.refresh_token(
        f"{server.url}/services/oauth2/token", refresh_token=SANDBOX_REFRESH_TOKEN
    )
    assert token["instance_url"] == server.url
    assert token["token_type"] == "Bearer"
    assert {"access_token", "id", "issued_at", "signature"} <= token.keys()


@pytest.mark.parametrize(
    ("refresh", "secret", "error"),
    [
        ("5Aep861unknown", SANDBOX_CONSUMER_SECRET, "invalid_grant"),
        (SANDBOX_REFRESH_TOKEN, "wrong-secret", "invalid_client"),
    ],
)
def test_refresh_token_grant_refusals(
    server: SandboxServer, refresh: str, secret: str, error: str
) -> None:
    client = OAuth2Session(SANDBOX_CONSUMER_KEY, secret)
    client.verify = str(server.ca_bundle)
    client.trust_env = False
    with client, pytest.raises(OAuthError) as caught:
        client.refresh_token(f"{server.url}/services/oauth2/token", refresh_token=refresh)
    assert caught.value.error == error


def _authorize(server: SandboxServer, oauth: OAuth2Session, verifier: str) -> str:
    """Run the authorize step; returns the redirect (the callback URL with code and state)."""
    url, state = oauth.create_authorization_url(
        f"{server.url}/services/oauth2/authorize", code_verifier=verifier
    )
    answer = oauth.get(url, allow_redirects=False, withhold_token=True)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT)
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    return str(location)


VERIFIER = "v" * 43 + "-_.~0123456789"


def test_web_server_flow_with_pkce_yields_a_refresh_token(
    server: SandboxServer, oauth: OAuth2Session
) -> None:
    location = _authorize(server, oauth, VERIFIER)
    token = oauth.fetch_token(
        f"{server.url}/services/oauth2/token",
        authorization_response=location,
        code_verifier=VERIFIER,
    )
    assert token["refresh_token"]
    assert token["instance_url"] == server.url
    again = oauth.refresh_token(
        f"{server.url}/services/oauth2/token", refresh_token=token["refresh_token"]
    )
    assert again["access_token"] != token["access_token"]


@pytest.mark.parametrize("verifier", ["w" * 50, None])
def test_code_exchange_refuses_a_wrong_or_missing_verifier(
    server: SandboxServer, oauth: OAuth2Session, verifier: str | None
) -> None:
    location = _authorize(server, oauth, VERIFIER)
    with pytest.raises(OAuthError) as caught:
        oauth.fetch_token(
            f"{server.url}/services/oauth2/token",
            authorization_response=location,
            code_verifier=verifier,
        )
    assert caught.value.error == "invalid_grant"


def test_an_authorization_code_is_exchanged_once(
    server: SandboxServer, oauth: OAuth2Session
) -> None:
    location = _authorize(server, oauth, VERIFIER)
    url = f"{server.url}/services/oauth2/token"
    oauth.fetch_token(url, authorization_response=location, code_verifier=VERIFIER)
    with pytest.raises(OAuthError) as caught:
        oauth.fetch_token(url, authorization_response=location, code_verifier=VERIFIER)
    assert caught.value.error == "invalid_grant"


def test_authorize_refuses_an_unknown_client_without_redirecting(
    server: SandboxServer, oauth: OAuth2Session
) -> None:
    answer = oauth.get(
        f"{server.url}/services/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": "unknown",
            "redirect_uri": REDIRECT,
            "code_challenge": create_s256_code_challenge(VERIFIER),
        },
        allow_redirects=False,
        withhold_token=True,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_client_id"


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["Company", "LastName"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_required_field_is_refused_on_create(sf: Client, field: str, blank: str) -> None:
    lead = {"LastName": "Silva", "Company": "Acme", field: blank}
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.create(lead)
    error = _error(caught)
    assert error["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert error["message"] == f"Required fields are missing: [{field}]"
    assert error["fields"] == [field]
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0


@pytest.mark.parametrize("field", ["Company", "LastName"])
@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_required_field_is_refused_on_update(sf: Client, field: str, blank: str) -> None:
    lead_id = sf.Lead.create({"LastName": "Silva", "Company": "Acme"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.update(lead_id, {field: blank})
    assert _error(caught)["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.Lead.get(lead_id)[field] in ("Silva", "Acme")


def test_an_empty_optional_text_field_is_stored_as_null(sf: Client) -> None:
    lead_id = sf.Lead.create({"LastName": "Silva", "Company": "Acme", "Title": ""})["id"]
    assert sf.Lead.get(lead_id)["Title"] is None


@pytest.mark.parametrize(
    ("field", "value"), [("Status", "Maybe Later"), ("GeocodeAccuracy", "Somewhere")]
)
def test_values_outside_a_restricted_picklist_are_refused(
    sf: Client, field: str, value: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.create({"LastName": "Silva", "Company": "Acme", field: value})
    error = _error(caught)
    assert error["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert error["fields"] == [field]


def test_a_lone_surrogate_is_refused(sf: Client) -> None:
    # simple-salesforce sends json.dumps' \ud800 escape, which decodes to no Unicode text.
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.create({"LastName": "Silva\ud800", "Company": "Acme"})
    assert _error(caught)["errorCode"] == "JSON_PARSER_ERROR"
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0


def test_bytes_that_are_not_utf8_are_refused(server: SandboxServer, sf: Client) -> None:
    body = b'{"LastName": "Silva\xff\xfe", "Company": "Acme"}'
    answer = sf.session.post(
        f"{sf.base_url}sobjects/Lead/",
        data=body,
        headers={**sf.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


# --- describe: the compound Address -------------------------------------------------------------


def test_lead_describe_has_the_compound_address(sf: Client) -> None:
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    address = fields["Address"]
    assert (address["type"], address["soapType"]) == ("address", "urn:address")
    assert not address["createable"]
    assert not address["updateable"]
    assert (fields["Street"]["type"], fields["Street"]["length"]) == ("textarea", 255)
    for name in ("Latitude", "Longitude"):
        assert fields[name]["type"] == "double"
        assert (fields[name]["precision"], fields[name]["scale"]) == (18, 15)
    assert fields["GeocodeAccuracy"]["type"] == "picklist"
    assert fields["GeocodeAccuracy"]["restrictedPicklist"]
    for name in ("Street", "City", "State", "PostalCode", "Country", "Latitude"):
        assert fields[name]["compoundFieldName"] == "Address"
    assert fields["Email"]["compoundFieldName"] is None


def test_describe_answers_304_while_the_metadata_is_unchanged(
    server: SandboxServer, sf: Client
) -> None:
    url = f"{sf.base_url}sobjects/Lead/describe"
    # If-Modified-Since has whole seconds: a change within the second of the header counts as
    # later, so let the second of the sandbox's reset pass first.
    time.sleep(1.1)
    first = sf.session.get(url, headers=sf.headers)
    assert first.status_code == 200
    since = {**sf.headers, "If-Modified-Since": first.headers["Date"]}
    unchanged = sf.session.get(url, headers=since)
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    server.sandbox.emulators["salesforce"].change_schema({"remove_field": "UTM_Term__c"})
    changed = sf.session.get(url, headers=since)
    assert changed.status_code == 200
    assert "UTM_Term__c" not in {f["name"] for f in changed.json()["fields"]}


def test_address_reads_back_from_its_components(sf: Client) -> None:
    lead_id = sf.Lead.create(
        {
            "LastName": "Silva",
            "Company": "Acme",
            "Street": "1 Market St",
            "City": "San Francisco",
            "Latitude": 37.79,
        }
    )["id"]
    row = sf.query(f"SELECT Address FROM Lead WHERE Id = '{lead_id}'")["records"][0]
    assert row["Address"] == {
        "city": "San Francisco",
        "country": None,
        "geocodeAccuracy": None,
        "latitude": 37.79,
        "longitude": None,
        "postalCode": None,
        "state": None,
        "street": "1 Market St",
    }


@pytest.mark.parametrize(
    ("soql", "refused"),
    [
        ("SELECT Id FROM Lead WHERE Address = null", "can not be filtered"),
        ("SELECT Id FROM Lead ORDER BY Address", "can not be ordered"),
        ("SELECT Id FROM Lead WHERE Description = 'x'", "can not be filtered"),
    ],
)
def test_compound_and_long_text_fields_cannot_filter_or_order(
    sf: Client, soql: str, refused: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(soql)
    assert _error(caught)["errorCode"] == "INVALID_FIELD"
    assert refused in _error(caught)["message"]


def test_street_filters_like_any_short_text(sf: Client) -> None:
    sf.Lead.create({"LastName": "Silva", "Company": "Acme", "Street": "1 Market St"})
    rows = sf.query("SELECT Street FROM Lead WHERE Street = '1 Market St' ORDER BY Street")
    assert [r["Street"] for r in rows["records"]] == ["1 Market St"]


def test_the_compound_address_cannot_be_written(sf: Client) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Lead.create({"LastName": "Silva", "Company": "Acme", "Address": {"city": "Paris"}})
    assert _error(caught)["errorCode"] in ("JSON_PARSER_ERROR", "INVALID_FIELD_FOR_INSERT_UPDATE")


# --- unknown routes ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["nosuchresource", "sobjects/NoSuchObject__c/describe"])
def test_unknown_routes_answer_not_found(sf: Client, path: str) -> None:
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.restful(path)
    assert caught.value.content == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]


# --- deletes and merges ---------------------------------------------------------------------------


def test_a_deleted_lead_is_seen_by_query_all_only(sf: Client) -> None:
    lead_id = sf.Lead.create({"LastName": "Silva", "Company": "Acme"})["id"]
    sf.Lead.delete(lead_id)
    soql = f"SELECT Id, IsDeleted FROM Lead WHERE Id = '{lead_id}'"
    assert sf.query(soql)["totalSize"] == 0
    rows = sf.query_all(soql, include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(lead_id, True)]


def test_a_merge_deletes_the_loser_naming_the_master(server: SandboxServer, sf: Client) -> None:
    master = sf.Lead.create({"LastName": "Silva", "Company": "Acme", "Title": "CTO"})["id"]
    loser = sf.Lead.create({"LastName": "Silva", "Company": "Acme Inc", "Title": "VP"})["id"]
    answer = sf.session.post(
        f"{server.url}/__sandbox__/salesforce/merge",
        json={"master_id": master, "merged_ids": [loser]},
    )
    assert answer.status_code == 200
    rows = sf.query_all(
        "SELECT Id, IsDeleted, MasterRecordId, Title FROM Lead ORDER BY CreatedDate",
        include_deleted=True,
    )["records"]
    assert [(r["Id"], r["IsDeleted"], r["MasterRecordId"], r["Title"]) for r in rows] == [
        (master, False, None, "CTO"),
        (loser, True, master, "VP"),
    ]


# --- the wire -------------------------------------------------------------------------------------


def _raw_get(server: SandboxServer, path: str, token: str) -> tuple[list[str], bytes]:
    """The response header lines and body of ``GET path`` as bytes on the socket."""
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(request.encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n")[1:], body


@pytest.mark.parametrize("authorized", [True, False])
def test_header_names_are_spelt_as_salesforce_spells_them(
    server: SandboxServer, sf: Client, authorized: bool
) -> None:
    token = sf.session_id if authorized else "expired"
    lines, body = _raw_get(server, "/services/data/v59.0/limits/", token)
    names = {line.split(":", 1)[0] for line in lines}
    assert {"Date", "Content-Type", "Content-Length"} <= names
    assert "Content-Type: application/json;charset=UTF-8" in lines
    assert all(name[0].isupper() for name in names)
    if authorized:
        assert "Sforce-Limit-Info" in names
        assert "DailyApiRequests" in json.loads(body)
