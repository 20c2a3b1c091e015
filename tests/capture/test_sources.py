"""Tests for the source fetchers (leadrelay.capture.sources) against the sandbox's Meta and
LinkedIn emulators, and respx for what the emulators do not produce."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from leadrelay.capture.app import create_app
from leadrelay.capture.sources import (
    FetchError,
    fetch_linkedin_lead,
    fetch_meta_lead,
    flatten_meta_field_data,
    google_fields,
    submission_fields,
)
from leadrelay.config import Config, LinkedInFormConfig, MetaFormConfig, load_config
from leadrelay.sandbox.adsources import LinkedInEmulator, MetaEmulator
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.state import StateStore
from tests.capture.conftest import (
    LINKEDIN_SECRET,
    META_APP_SECRET,
    TestClient,
    dumps,
    google_body,
    hex_sig,
    linkedin_body,
    meta_body,
)

PROJECT = f"""
[state]
url = "sqlite:///state.db"

[connections.hs]
kind = "hubspot"
access_token = "pat-na1-test"

[forms.meta-ads]
source = "meta_lead_ads"
destination = "hs"
mapping = "mapping.toml"
app_secret = "{META_APP_SECRET}"
verify_token = "verify"
access_token = "${{META_ACCESS_TOKEN}}"
graph_url = "${{META_GRAPH_URL}}"
ca_bundle = "${{LEADRELAY_CA_BUNDLE}}"
ad_account = "act_1"

[forms.linkedin-ads]
source = "linkedin_lead_gen"
destination = "hs"
mapping = "mapping.toml"
client_secret = "{LINKEDIN_SECRET}"
access_token = "${{LINKEDIN_ACCESS_TOKEN}}"
api_url = "${{LINKEDIN_API_URL}}"
ca_bundle = "${{LEADRELAY_CA_BUNDLE}}"

[forms.google-ads]
source = "google_ads_lead_form"
destination = "hs"
mapping = "mapping.toml"
google_key = "google-form-key-6"

[forms.web]
source = "webform"
destination = "hs"
mapping = "mapping.toml"
secret = "web-secret"
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[MetaEmulator, LinkedInEmulator]) as server:
        yield server


@pytest.fixture
def admin(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sandbox.ca_bundle))
    with httpx.Client(base_url=sandbox.url, verify=context) as client:
        yield client
        client.post("/__sandbox__/faults", json={})


@pytest.fixture
def config(sandbox: SandboxServer, tmp_path: Path) -> Config:
    (tmp_path / "mapping.toml").write_text('[fields]\nemail = "email"\n')
    (tmp_path / "leadrelay.toml").write_text(PROJECT)
    return load_config(tmp_path / "leadrelay.toml", environ=sandbox.env())


def meta_form(config: Config) -> MetaFormConfig:
    form = config.form("meta-ads")
    assert isinstance(form, MetaFormConfig)
    return form


def linkedin_form(config: Config) -> LinkedInFormConfig:
    form = config.form("linkedin-ads")
    assert isinstance(form, LinkedInFormConfig)
    return form


def new_meta_lead(admin: httpx.Client, **extra: Any) -> str:
    body = {
        "form_id": "555",
        "ad_id": "777",
        "campaign_id": "888",
        "field_data": [
            {"name": "email", "values": ["ana@acme.io"]},
            {"name": "full_name", "values": ["Ana Silva"]},
            {"name": "interests", "values": ["crm", "ads"]},
        ],
        **extra,
    }
    response = admin.post("/__sandbox__/leads/meta", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def new_linkedin_lead(admin: httpx.Client, *, test_lead: bool = False) -> str:
    body = {
        "form_id": "7001",
        "answers": {"EMAIL": "li@acme.io", "FIRST_NAME": "Lia", "COMPANY_NAME": "Acme"},
        "test_lead": test_lead,
    }
    response = admin.post("/__sandbox__/leads/linkedin", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


# -- Meta ------------------------------------------------------------------------------------


def test_meta_lead_is_fetched_and_flattened(admin: httpx.Client, config: Config) -> None:
    leadgen_id = new_meta_lead(admin)
    assert fetch_meta_lead(meta_form(config), leadgen_id) == {
        "email": "ana@acme.io",
        "full_name": "Ana Silva",
        "interests": "crm;ads",
    }


def test_meta_unknown_lead_is_not_retryable(config: Config) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_meta_lead(meta_form(config), "424242")
    assert not caught.value.retryable
    assert caught.value.status == 400
    assert "424242" in str(caught.value)


def test_meta_bad_token_never_shows_the_token(admin: httpx.Client, config: Config) -> None:
    leadgen_id = new_meta_lead(admin)
    form = meta_form(config).model_copy(update={"access_token": SecretStr("EAAwrongtoken123")})
    with pytest.raises(FetchError) as caught:
        fetch_meta_lead(form, leadgen_id)
    assert "EAAwrongtoken123" not in str(caught.value)
    assert meta_form(config).access_token.get_secret_value() not in str(caught.value)
    assert not caught.value.retryable


def test_meta_outage_is_retryable(admin: httpx.Client, config: Config) -> None:
    leadgen_id = new_meta_lead(admin)
    admin.post(
        "/__sandbox__/faults", json={"error_rate": 1.0, "error_status": 503, "systems": ["meta"]}
    )
    with pytest.raises(FetchError) as caught:
        fetch_meta_lead(meta_form(config), leadgen_id)
    assert caught.value.retryable
    assert caught.value.status == 503


@pytest.mark.parametrize(
    ("field_data", "expected"),
    [
        ([{"name": "email", "values": ["a@b.c"]}], {"email": "a@b.c"}),
        ([{"name": "choice", "values": ["x", "y"]}], {"choice": "x;y"}),
        ([{"name": "empty", "values": []}], {"empty": ""}),
        ([], {}),
    ],
)
def test_flatten_meta_field_data(field_data: list[Any], expected: dict[str, str]) -> None:
    assert flatten_meta_field_data(field_data) == expected


@pytest.mark.parametrize("field_data", ["x", [{"values": ["a"]}], [1]])
def test_flatten_meta_field_data_refuses_bad_shapes(field_data: Any) -> None:
    with pytest.raises(ValueError):
        flatten_meta_field_data(field_data)


# -- LinkedIn --------------------------------------------------------------------------------


def test_linkedin_answers_are_named_by_predefined_field(
    admin: httpx.Client, config: Config
) -> None:
    urn = new_linkedin_lead(admin)
    assert fetch_linkedin_lead(linkedin_form(config), urn) == {
        "EMAIL": "li@acme.io",
        "FIRST_NAME": "Lia",
        "COMPANY_NAME": "Acme",
    }


def test_linkedin_unknown_response_is_not_retryable(config: Config) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_linkedin_lead(linkedin_form(config), "urn:li:leadGenFormResponse:nope")
    assert (caught.value.status, caught.value.retryable) == (404, False)
    assert caught.value.lead_id == "nope"


LI_API = "https://api.linkedin.example"


def _li_form(config: Config) -> LinkedInFormConfig:
    return linkedin_form(config).model_copy(update={"api_url": LI_API, "ca_bundle": None})


@respx.mock
def test_linkedin_multiple_choice_answers_use_option_texts(config: Config) -> None:
    respx.get(f"{LI_API}/rest/leadFormResponses/r1").respond(
        json={
            "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:9,2)",
            "formResponse": {
                "answers": [
                    {
                        "questionId": 1,
                        "answerDetails": {"multipleChoiceAnswer": {"options": [2, 3]}},
                    },
                    {"questionId": 4, "answerDetails": {"textQuestionAnswer": {"answer": "x@y.z"}}},
                ]
            },
        }
    )
    respx.get(f"{LI_API}/rest/leadForms/9").respond(
        json={
            "content": {
                "questions": [
                    {
                        "questionId": 1,
                        "name": "interest",
                        "questionDetails": {
                            "multipleChoiceQuestionDetails": {
                                "options": [{"id": 2, "text": "CRM"}, {"id": 3, "text": "Ads"}]
                            }
                        },
                    },
                    {"questionId": 4, "predefinedField": "EMAIL"},
                ]
            }
        }
    )
    fields = fetch_linkedin_lead(_li_form(config), "urn:li:leadGenFormResponse:r1")
    assert fields == {"interest": "CRM;Ads", "EMAIL": "x@y.z"}


@respx.mock
def test_connection_error_is_retryable_and_hides_the_token(config: Config) -> None:
    respx.get(f"{LI_API}/rest/leadFormResponses/r2").mock(
        side_effect=httpx.ConnectError("connection refused")
    )
    form = _li_form(config)
    with pytest.raises(FetchError) as caught:
        fetch_linkedin_lead(form, "urn:li:leadGenFormResponse:r2")
    assert caught.value.retryable
    assert form.access_token.get_secret_value() not in str(caught.value)


@respx.mock
def test_rate_limit_is_retryable_with_retry_after(config: Config) -> None:
    respx.get(f"{LI_API}/rest/leadFormResponses/r3").respond(
        429, headers={"Retry-After": "12"}, json={"status": 429, "message": "throttled"}
    )
    with pytest.raises(FetchError) as caught:
        fetch_linkedin_lead(_li_form(config), "r3")
    assert (caught.value.retryable, caught.value.retry_after) == (True, 12.0)


# -- submission_fields ---------------------------------------------------------------------------


@pytest.fixture
def capture(config: Config) -> Iterator[tuple[TestClient, StateStore]]:
    with StateStore(config.state.url) as store, TestClient(create_app(config, store)) as client:
        yield client, store


def _only_item(store: StateStore) -> Any:
    (item,) = store.claim_inbox()
    return item


def test_meta_notification_becomes_fields_via_the_graph_api(
    admin: httpx.Client, config: Config, capture: tuple[TestClient, StateStore]
) -> None:
    client, store = capture
    leadgen_id = new_meta_lead(admin)
    body = meta_body(leadgen_id)
    response = client.post(
        "/hooks/meta",
        content=body,
        headers={"X-Hub-Signature-256": "sha256=" + hex_sig(META_APP_SECRET, body)},
    )
    assert response.status_code == 202
    fields = submission_fields(_only_item(store), config)
    assert fields["email"] == "ana@acme.io"
    assert (fields["form_id"], fields["ad_id"], fields["campaign_id"]) == ("555", "777", "888")
    assert fields["ad_account"] == "act_1"


def test_linkedin_notification_becomes_fields_with_test_flag(
    admin: httpx.Client, config: Config, capture: tuple[TestClient, StateStore]
) -> None:
    client, store = capture
    urn = new_linkedin_lead(admin, test_lead=True)
    body = linkedin_body(urn)
    response = client.post(
        "/hooks/linkedin", content=body, headers={"X-LI-Signature": hex_sig(LINKEDIN_SECRET, body)}
    )
    assert response.status_code == 202
    fields = submission_fields(_only_item(store), config)
    assert fields["EMAIL"] == "li@acme.io"
    assert fields["is_test"] is True
    assert fields["form_id"] == "7001"


def test_google_lead_fields(config: Config, capture: tuple[TestClient, StateStore]) -> None:
    client, store = capture
    assert client.post("/hooks/google-ads", json=google_body()).status_code == 202
    fields = submission_fields(_only_item(store), config)
    assert fields == {
        "FULL_NAME": "Ana Silva",
        "EMAIL": "ana@example.com",
        "form_id": "40000000000",
        "campaign_id": "20000000000",
        "gclid": "Cj0",
        "is_test": True,
    }


def test_webform_fields(config: Config, capture: tuple[TestClient, StateStore]) -> None:
    client, store = capture
    response = client.post(
        "/forms/web",
        content=dumps({"email": "a@acme.io", "page_url": "https://acme.io/?utm_source=x"}),
        headers={"X-Leadrelay-Secret": "web-secret", "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    fields = submission_fields(_only_item(store), config)
    assert fields == {"email": "a@acme.io", "page_url": "https://acme.io/?utm_source=x"}


def test_meta_outage_during_delivery_keeps_the_lead(
    admin: httpx.Client, config: Config, capture: tuple[TestClient, StateStore]
) -> None:
    client, store = capture
    body = meta_body(new_meta_lead(admin))
    admin.post(
        "/__sandbox__/faults", json={"error_rate": 1.0, "error_status": 500, "systems": ["meta"]}
    )
    client.post(
        "/hooks/meta",
        content=body,
        headers={"X-Hub-Signature-256": "sha256=" + hex_sig(META_APP_SECRET, body)},
    )
    with pytest.raises(FetchError) as caught:
        submission_fields(_only_item(store), config)
    assert caught.value.retryable
    assert store.inbox_counts()["pending"] == 1


def test_form_removed_from_config_is_not_retryable(
    config: Config, capture: tuple[TestClient, StateStore]
) -> None:
    client, store = capture
    client.post("/hooks/google-ads", json=google_body())
    trimmed = config.model_copy(update={"forms": {}})
    with pytest.raises(FetchError) as caught:
        submission_fields(_only_item(store), trimmed)
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ([{"column_id": "EMAIL", "string_value": "a@b.c"}], {"EMAIL": "a@b.c"}),
        ([{"column_name": "Budget?", "string_value": "10k"}], {"Budget?": "10k"}),
        ([{"column_id": "CITY"}], {"CITY": ""}),
        ([{"string_value": "orphan"}, 5], {}),
        ("not a list", {}),
    ],
)
def test_google_fields(columns: Any, expected: dict[str, str]) -> None:
    assert google_fields(columns) == expected
