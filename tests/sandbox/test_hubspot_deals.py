"""The emulated HubSpot deals, deal pipelines and contact–deal associations, as the official
client (``hubspot-api-client`` with ``client_side_validation=True``) and plain HTTP see them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.contacts import SimplePublicObjectInputForCreate
from hubspot.crm.deals import (
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectId,
    SimplePublicObjectInput,
)
from hubspot.crm.deals import SimplePublicObjectInputForCreate as DealInput

from tests.hubspot_sandbox import (  # noqa: F401 (fixtures)
    hubspot_server,
    plain_http,
    reset_hubspot,
    validating_client,
)

DEALS = "/crm/v3/objects/deals"


def contact(hs: HubSpot, email: str) -> str:
    made = hs.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(properties={"email": email})
    )
    return str(made.id)


def deal(hs: HubSpot, stage: str, *contacts: str, **props: str) -> str:
    associations: list[dict[str, Any]] = [
        {
            "to": {"id": c},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
        }
        for c in contacts
    ]
    made = hs.crm.deals.basic_api.create(
        DealInput(
            properties={"dealname": "Acme deal", "dealstage": stage, **props},
            associations=associations,
        )
    )
    return str(made.id)


def test_the_default_pipeline_lists_its_stages_with_closed_and_probability(hs: HubSpot) -> None:
    pipelines = hs.crm.pipelines.pipelines_api.get_all("deals").results
    assert [p.id for p in pipelines] == ["default"]
    stages = {s.id: s.metadata for s in pipelines[0].stages}
    assert stages["closedwon"] == {"isClosed": "true", "probability": "1.0"}
    assert stages["closedlost"] == {"isClosed": "true", "probability": "0.0"}
    assert stages["appointmentscheduled"]["isClosed"] == "false"


def test_a_created_pipeline_is_listed_and_its_stages_are_deal_stages(
    hs: HubSpot, http: httpx.Client
) -> None:
    body = {
        "label": "Renewals",
        "displayOrder": 1,
        "stages": [
            {"label": "Open", "displayOrder": 0, "metadata": {"probability": "0.5"}},
            {
                "label": "Renewed",
                "displayOrder": 1,
                "metadata": {"isClosed": "true", "probability": "1.0"},
            },
        ],
    }
    created = http.post("/crm/v3/pipelines/deals", json=body)
    assert created.status_code == 201, created.text
    pipeline = created.json()
    renewed = pipeline["stages"][1]["id"]
    found = hs.crm.pipelines.pipelines_api.get_by_id("deals", pipeline["id"])
    assert [s.label for s in found.stages] == ["Open", "Renewed"]
    deal_id = deal(hs, renewed, pipeline=pipeline["id"])
    read = hs.crm.deals.basic_api.get_by_id(deal_id, properties=["hs_is_closed_won"])
    assert read.properties["hs_is_closed_won"] == "true"


def test_a_stage_of_another_pipeline_is_refused(http: httpx.Client) -> None:
    response = http.post(
        DEALS, json={"properties": {"dealname": "x", "dealstage": "no-such-stage"}}
    )
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"
    assert "dealstage" in response.json()["message"]


def test_a_deal_needs_a_stage(http: httpx.Client) -> None:
    response = http.post(DEALS, json={"properties": {"dealname": "x"}})
    assert response.status_code == 400
    assert "dealstage" in response.json()["message"]


@pytest.mark.parametrize(
    ("stage", "closed", "won", "lost"),
    [
        ("qualifiedtobuy", "false", "false", "false"),
        ("closedwon", "true", "true", "false"),
        ("closedlost", "true", "false", "true"),
    ],
)
def test_the_closed_flags_follow_the_stage(
    hs: HubSpot, stage: str, closed: str, won: str, lost: str
) -> None:
    deal_id = deal(hs, stage)
    names = ["hs_is_closed", "hs_is_closed_won", "hs_is_closed_lost", "pipeline"]
    read = hs.crm.deals.basic_api.get_by_id(deal_id, properties=names).properties
    assert read == {
        "hs_is_closed": closed,
        "hs_is_closed_won": won,
        "hs_is_closed_lost": lost,
        "pipeline": "default",
    }


def test_entering_a_closed_stage_sets_the_close_date_once(hs: HubSpot) -> None:
    deal_id = deal(hs, "contractsent")
    assert (
        hs.crm.deals.basic_api.get_by_id(deal_id, properties=["closedate"]).properties["closedate"]
        is None
    )
    update = SimplePublicObjectInput(properties={"dealstage": "closedwon"})
    hs.crm.deals.basic_api.update(deal_id, update)
    closed = hs.crm.deals.basic_api.get_by_id(deal_id, properties=["closedate"])
    assert closed.properties["closedate"] is not None


def test_a_close_date_given_is_kept(hs: HubSpot) -> None:
    deal_id = deal(hs, "closedlost", closedate="2026-03-01T10:00:00.000Z")
    read = hs.crm.deals.basic_api.get_by_id(deal_id, properties=["closedate"])
    assert read.properties["closedate"] == "2026-03-01T10:00:00.000Z"


def test_calculated_flags_are_read_only(http: httpx.Client) -> None:
    response = http.post(
        DEALS,
        json={
            "properties": {"dealname": "x", "dealstage": "closedwon", "hs_is_closed_won": "false"}
        },
    )
    assert response.status_code == 400
    assert "READ_ONLY_VALUE" in response.json()["message"]


def test_deals_are_searched_by_last_modified_date_in_order(hs: HubSpot) -> None:
    first = deal(hs, "qualifiedtobuy")
    second = deal(hs, "closedwon")
    request = PublicObjectSearchRequest(
        filter_groups=[
            {"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}
        ],
        sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        properties=["dealstage"],
        limit=10,
    )
    found = hs.crm.deals.search_api.do_search(request)
    assert found.total == 2
    assert [r.id for r in found.results] == [first, second]
    assert found.results[1].properties["dealstage"] == "closedwon"


def test_a_batch_read_answers_the_deals_found_and_a_207_for_the_others(
    hs: HubSpot, http: httpx.Client
) -> None:
    deal_id = deal(hs, "closedwon", amount="1200")
    found = hs.crm.deals.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=deal_id)],
            properties=["amount"],
            properties_with_history=[],
        )
    )
    assert [(r.id, r.properties["amount"]) for r in found.results] == [(deal_id, "1200")]
    response = http.post(f"{DEALS}/batch/read", json={"inputs": [{"id": deal_id}, {"id": "42"}]})
    assert response.status_code == 207
    assert "DEAL objects" in response.json()["errors"][0]["message"]


def test_a_deal_created_with_a_contact_is_associated_both_ways(
    hs: HubSpot, http: httpx.Client
) -> None:
    ada = contact(hs, "ada@example.com")
    deal_id = deal(hs, "closedwon", ada)
    request = BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[PublicFetchAssociationsBatchRequest(id=ada)]
    )
    answer = hs.crm.associations.v4.batch_api.get_page("contacts", "deals", request)
    assert [(r._from.id, [t.to_object_id for t in r.to]) for r in answer.results] == [
        (ada, [deal_id])
    ]
    assert answer.results[0].to[0].association_types[0].type_id == 4
    back = hs.crm.associations.v4.batch_api.get_page(
        "deals",
        "contacts",
        BatchInputPublicFetchAssociationsBatchRequest(
            inputs=[PublicFetchAssociationsBatchRequest(id=deal_id)]
        ),
    )
    assert back.results[0].to[0].to_object_id == ada
    assert back.results[0].to[0].association_types[0].type_id == 3
    v3 = http.get(f"/crm/v3/objects/contacts/{ada}/associations/deals").json()
    assert v3 == {"results": [{"id": deal_id, "type": "contact_to_deal"}]}


def test_a_deal_is_associated_with_a_contact_by_the_default_association(hs: HubSpot) -> None:
    ada = contact(hs, "ada@example.com")
    deal_id = deal(hs, "qualifiedtobuy")
    hs.crm.associations.v4.basic_api.create_default("deals", deal_id, "contacts", ada)
    listed = hs.crm.associations.v4.basic_api.get_page("contacts", ada, "deals")
    assert [r.to_object_id for r in listed.results] == [deal_id]


def test_an_archived_deal_drops_out_of_the_associations(hs: HubSpot, http: httpx.Client) -> None:
    ada = contact(hs, "ada@example.com")
    deal_id = deal(hs, "closedlost", ada)
    hs.crm.deals.basic_api.archive(deal_id)
    response = http.post(
        "/crm/v4/associations/contacts/deals/batch/read", json={"inputs": [{"id": ada}]}
    )
    assert response.status_code == 207
    assert response.json()["errors"][0]["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"


def test_a_merge_moves_the_contacts_deals(hs: HubSpot) -> None:
    from hubspot.crm.contacts import PublicMergeInput

    ada = contact(hs, "ada@example.com")
    other = contact(hs, "ada@work.example.com")
    deal_id = deal(hs, "closedwon", other)
    merged = hs.crm.contacts.basic_api.merge(
        PublicMergeInput(primary_object_id=ada, object_id_to_merge=other)
    )
    listed = hs.crm.associations.v4.basic_api.get_page("contacts", str(merged.id), "deals")
    assert [r.to_object_id for r in listed.results] == [deal_id]


def test_deal_properties_are_listed_with_their_options(hs: HubSpot) -> None:
    props = {p.name: p for p in hs.crm.properties.core_api.get_all("deals").results}
    assert {"closed_won_reason", "closed_lost_reason", "deal_currency_code"} <= props.keys()
    assert "closedwon" in {o.value for o in props["dealstage"].options}
    assert props["hs_is_closed_won"].modification_metadata.read_only_value is True


def test_the_v3_batch_read_answers_a_contacts_deals(hs: HubSpot, http: httpx.Client) -> None:
    ada = contact(hs, "ada@example.com")
    deal_id = deal(hs, "qualifiedtobuy", ada)

    response = http.post(
        "/crm/v3/associations/contacts/deals/batch/read", json={"inputs": [{"id": ada}]}
    )

    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {"from": {"id": ada}, "to": [{"id": deal_id, "type": "contact_to_deal"}]}
    ]


def test_a_deal_read_with_associations_lists_its_contacts(hs: HubSpot) -> None:
    ada = contact(hs, "ada@example.com")
    deal_id = deal(hs, "qualifiedtobuy", ada)

    read = hs.crm.deals.basic_api.get_by_id(deal_id, associations=["contacts"])

    assert [a.id for a in read.associations["contacts"].results] == [ada]
