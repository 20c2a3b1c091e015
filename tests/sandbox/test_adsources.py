"""Meta and LinkedIn lead retrieval emulators, driven with plain httpx."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from leadrelay.sandbox.adsources import LinkedInEmulator, MetaEmulator
from leadrelay.sandbox.base import Faults
from leadrelay.sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(emulator_types=[MetaEmulator, LinkedInEmulator]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    with httpx.Client(verify=context, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def clean(server: SandboxServer) -> None:
    server.sandbox.reset()
    server.sandbox.set_faults(Faults())


@pytest.fixture
def env(server: SandboxServer) -> dict[str, str]:
    return server.env()


META_LEAD = {
    "form_id": "555000111",
    "ad_id": "777000",
    "campaign_id": "888000",
    "page_id": "1234",
    "field_data": [
        {"name": "email", "values": ["ana@example.com"]},
        {"name": "full_name", "values": ["Ana Silva"]},
    ],
}


def create_meta(http: httpx.Client, server: SandboxServer, body: Any = None) -> httpx.Response:
    return http.post(
        f"{server.url}/__sandbox__/leads/meta", json=META_LEAD if body is None else body
    )


# -- Meta --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v19.0/{id}", "/{id}"])
def test_meta_lead_is_fetched_with_field_data(
    http: httpx.Client, server: SandboxServer, env: dict[str, str], path: str
) -> None:
    leadgen_id = create_meta(http, server).json()["id"]
    assert leadgen_id.isdigit()
    response = http.get(
        env["META_GRAPH_URL"] + path.format(id=leadgen_id),
        params={
            "fields": "created_time,id,ad_id,form_id,campaign_id,field_data,is_organic,platform",
            "access_token": env["META_ACCESS_TOKEN"],
        },
    )
    body = response.json()
    assert body["id"] == leadgen_id
    assert body["form_id"] == "555000111"
    assert body["field_data"][0] == {"name": "email", "values": ["ana@example.com"]}
    assert body["is_organic"] is False
    assert body["created_time"].endswith("+0000")


def test_meta_organic_lead_has_no_ad_fields(
    http: httpx.Client, server: SandboxServer, env: dict[str, str]
) -> None:
    leadgen_id = create_meta(
        http, server, {"form_id": "1", "field_data": [{"name": "email", "values": ["a@b.co"]}]}
    ).json()["id"]
    body = http.get(
        f"{env['META_GRAPH_URL']}/{leadgen_id}",
        params={"fields": "ad_id,is_organic", "access_token": env["META_ACCESS_TOKEN"]},
    ).json()
    assert body == {"is_organic": True}


@pytest.mark.parametrize(
    ("params", "code", "subcode"),
    [
        ({"access_token": "META"}, 100, 33),
        ({}, 104, None),
        ({"access_token": "wrong"}, 190, None),
    ],
)
def test_meta_errors_are_graph_errors(
    http: httpx.Client, env: dict[str, str], params: dict[str, str], code: int, subcode: int | None
) -> None:
    query = {k: (env["META_ACCESS_TOKEN"] if v == "META" else v) for k, v in params.items()}
    response = http.get(f"{env['META_GRAPH_URL']}/v19.0/404404", params=query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("error_subcode") == subcode
    assert error["fbtrace_id"]


def test_meta_unknown_field_is_refused(
    http: httpx.Client, server: SandboxServer, env: dict[str, str]
) -> None:
    leadgen_id = create_meta(http, server).json()["id"]
    response = http.get(
        f"{env['META_GRAPH_URL']}/{leadgen_id}",
        params={"fields": "id,shoe_size", "access_token": env["META_ACCESS_TOKEN"]},
    )
    assert "shoe_size" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"field_data": [{"name": "email", "values": ["a"]}]}, "form_id"),
        ({"form_id": "1", "field_data": []}, "field_data"),
        ({"form_id": "1", "field_data": [{"name": "email", "values": "a"}]}, "values"),
        ({**META_LEAD, "is_organic": "no"}, "is_organic"),
        ({**META_LEAD, "ad_id": "abc"}, "ad_id"),
    ],
)
def test_meta_admin_validates_the_body(
    http: httpx.Client, server: SandboxServer, body: dict[str, Any], reason: str
) -> None:
    response = create_meta(http, server, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_meta_reset_forgets_leads(
    http: httpx.Client, server: SandboxServer, env: dict[str, str]
) -> None:
    leadgen_id = create_meta(http, server).json()["id"]
    server.sandbox.reset()
    response = http.get(
        f"{env['META_GRAPH_URL']}/{leadgen_id}", params={"access_token": env["META_ACCESS_TOKEN"]}
    )
    assert response.json()["error"]["error_subcode"] == 33


# -- LinkedIn ----------------------------------------------------------------------------------


def li_headers(env: dict[str, str], **override: str) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {env['LINKEDIN_ACCESS_TOKEN']}",
        "LinkedIn-Version": "202501",
        "X-Restli-Protocol-Version": "2.0.0",
    }
    headers.update(override)
    return {k: v for k, v in headers.items() if v}


def create_linkedin(http: httpx.Client, server: SandboxServer, body: Any) -> httpx.Response:
    return http.post(f"{server.url}/__sandbox__/leads/linkedin", json=body)


LI_LEAD = {
    "form_id": "9001",
    "answers": {"EMAIL": "ana@example.com", "FIRST_NAME": "Ana", "COMPANY_NAME": "Acme"},
}


@pytest.mark.parametrize("encode", [True, False])
def test_linkedin_response_and_form_map_answers(
    http: httpx.Client, server: SandboxServer, env: dict[str, str], encode: bool
) -> None:
    urn = create_linkedin(http, server, {**LI_LEAD, "test_lead": True}).json()["id"]
    assert urn.startswith("urn:li:leadGenFormResponse:")
    key = quote(urn, safe="") if encode else urn.rsplit(":", 1)[-1]
    response = http.get(
        f"{env['LINKEDIN_API_URL']}/leadFormResponses/{key}", headers=li_headers(env)
    )
    body = response.json()
    assert body["testLead"] is True
    assert body["leadType"] == "SPONSORED"
    form_urn = body["versionedLeadGenFormUrn"]
    assert "urn:li:leadGenForm:9001" in form_urn
    form = http.get(f"{env['LINKEDIN_API_URL']}/leadForms/9001", headers=li_headers(env)).json()
    by_question = {q["questionId"]: q["predefinedField"] for q in form["content"]["questions"]}
    answers = {
        by_question[a["questionId"]]: a["answerDetails"]["textQuestionAnswer"]["answer"]
        for a in body["formResponse"]["answers"]
    }
    assert answers == LI_LEAD["answers"]


@pytest.mark.parametrize(
    ("override", "status", "code"),
    [
        ({"Authorization": "Bearer wrong"}, 401, "INVALID_ACCESS_TOKEN"),
        ({"Authorization": ""}, 401, "EMPTY_ACCESS_TOKEN"),
        ({"LinkedIn-Version": ""}, 400, "VERSION_MISSING"),
        ({"LinkedIn-Version": "201901"}, 426, "NONEXISTENT_VERSION"),
    ],
)
def test_linkedin_header_errors(
    http: httpx.Client,
    server: SandboxServer,
    env: dict[str, str],
    override: dict[str, str],
    status: int,
    code: str,
) -> None:
    urn = create_linkedin(http, server, LI_LEAD).json()["id"]
    response = http.get(
        f"{env['LINKEDIN_API_URL']}/leadFormResponses/{quote(urn, safe='')}",
        headers=li_headers(env, **override),
    )
    assert response.status_code == status
    assert response.json()["code"] == code


def test_linkedin_unknown_response_is_404(http: httpx.Client, env: dict[str, str]) -> None:
    response = http.get(
        f"{env['LINKEDIN_API_URL']}/leadFormResponses/nope", headers=li_headers(env)
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"answers": {"EMAIL": "a"}}, "form_id"),
        ({"form_id": "1", "answers": {}}, "answers"),
        ({"form_id": "1", "answers": {"SHOE_SIZE": "9"}}, "SHOE_SIZE"),
        ({"form_id": "1", "answers": {"EMAIL": 5}}, "EMAIL"),
        ({**LI_LEAD, "test_lead": "yes"}, "test_lead"),
    ],
)
def test_linkedin_admin_validates_the_body(
    http: httpx.Client, server: SandboxServer, body: dict[str, Any], reason: str
) -> None:
    response = create_linkedin(http, server, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def error_code(body: dict[str, Any]) -> Any:
    return body["error"]["code"] if "error" in body else body["code"]


@pytest.mark.parametrize(
    ("system", "url_key", "status", "code"),
    [
        ("meta", "META_GRAPH_URL", 400, 4),
        ("linkedin", "LINKEDIN_API_URL", 429, "TOO_MANY_REQUESTS"),
    ],
)
def test_rate_limit_answers_in_each_dialect(
    http: httpx.Client,
    server: SandboxServer,
    env: dict[str, str],
    system: str,
    url_key: str,
    status: int,
    code: Any,
) -> None:
    server.sandbox.set_faults(Faults(rate_limit_per_10s=1, systems=[system]))
    responses = [http.get(f"{env[url_key]}/x") for _ in range(2)]
    assert responses[1].status_code == status
    assert error_code(responses[1].json()) == code


@pytest.mark.parametrize(
    ("url_key", "code"), [("META_GRAPH_URL", 2), ("LINKEDIN_API_URL", "INTERNAL_SERVER_ERROR")]
)
def test_injected_errors_answer_in_each_dialect(
    http: httpx.Client, server: SandboxServer, env: dict[str, str], url_key: str, code: Any
) -> None:
    server.sandbox.set_faults(Faults(error_rate=1.0, error_status=503))
    response = http.get(f"{env[url_key]}/x")
    assert response.status_code == 503
    assert error_code(response.json()) == code
