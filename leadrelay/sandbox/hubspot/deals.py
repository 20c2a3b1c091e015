"""The emulated HubSpot deals object (``/crm/v3/objects/deals``) and deal pipelines
(``/crm/v3/pipelines/deals``).

Deals are kept like contacts (:class:`~leadrelay.sandbox.hubspot.store.ContactStore`: create,
read, update, archive, batch read, search with the same filters, sorts and index lag), with
their own properties (``/crm/v3/properties/deals``) and HubSpot's rules for them:

* ``pipeline`` defaults to ``default`` and ``dealstage`` must be a stage id of that pipeline
  (HubSpot's deals guide: internal ids, not labels);
* ``closedate`` is set to the moment a deal enters a closed stage when it has none (facts
  "Deals");
* ``hs_is_closed``, ``hs_is_closed_won``, ``hs_is_closed_lost`` and
  ``hs_deal_stage_probability`` are calculated from the stage's ``metadata`` (``isClosed``,
  ``probability``: 1.0 is won, closed with 0.0 is lost) and read only;
* ``closed_won_reason`` and ``closed_lost_reason`` are HubSpot's default multi-line text
  properties "Closed Won Reason" / "Closed Lost Reason"; ``deal_currency_code`` ("Currency")
  is a dropdown of the portal's currencies.

The default pipeline's stage ids and probabilities are those of a new portal (facts
"Deals"; the middle stage ids are third-party fixtures, not HubSpot's reference).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from leadrelay.sandbox.hubspot.errors import (
    not_found,
    property_errors,
    property_problem,
    validation_error,
)
from leadrelay.sandbox.hubspot.schema import (
    Schema,
    _options,
    hubspot_set_properties,
    iso_ms,
    make_property,
    seeded_owner_options,
)
from leadrelay.sandbox.hubspot.store import Contact, ContactStore, Props

__all__ = [
    "DEFAULT_DEAL_PROPERTIES",
    "DEFAULT_PIPELINE",
    "DealStore",
    "Pipeline",
    "PipelineStage",
    "deal_properties",
]

DEFAULT_PIPELINE = "default"
#: What a deal read returns when it names no properties (HubSpot's default deal read set).
DEFAULT_DEAL_PROPERTIES = (
    "amount",
    "closedate",
    "createdate",
    "dealname",
    "dealstage",
    "hs_lastmodifieddate",
    "hs_object_id",
    "pipeline",
)
#: Currencies of the sandbox portal (a guess at a multi-currency portal: HubSpot lists the
#: currencies an account enabled).
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD")
#: HubSpot deal record ids are large numbers; the sandbox's start here.
FIRST_DEAL_ID = 5_000_001
_SEEDED_AT_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z

#: (id, label, probability, closed) of the default pipeline's stages, in order.
_DEFAULT_STAGES = (
    ("appointmentscheduled", "Appointment Scheduled", "0.2", False),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", False),
    ("presentationscheduled", "Presentation Scheduled", "0.6", False),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
    ("contractsent", "Contract Sent", "0.9", False),
    ("closedwon", "Closed Won", "1.0", True),
    ("closedlost", "Closed Lost", "0.0", True),
)


@dataclass
class PipelineStage:
    """One stage of a deal pipeline."""

    id: str
    label: str
    display_order: int
    probability: str
    closed: bool

    @property
    def won(self) -> bool:
        """A closed stage with probability 1 is a win (HubSpot's closed-won stages)."""
        return self.closed and float(self.probability) >= 1.0

    def to_json(self, created_ms: int) -> dict[str, Any]:
        """The stage as ``/crm/v3/pipelines/deals`` answers it."""
        stamp = iso_ms(created_ms)
        return {
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "metadata": {
                "isClosed": "true" if self.closed else "false",
                "probability": self.probability,
            },
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        }


@dataclass
class Pipeline:
    """One deal pipeline and its stages, in order."""

    id: str
    label: str
    display_order: int
    stages: list[PipelineStage] = field(default_factory=list)
    created_ms: int = _SEEDED_AT_MS

    def stage(self, stage_id: str) -> PipelineStage | None:
        """The stage ``stage_id`` of this pipeline, or None."""
        return next((s for s in self.stages if s.id == stage_id), None)

    def to_json(self) -> dict[str, Any]:
        """The pipeline as ``/crm/v3/pipelines/deals`` answers it."""
        stamp = iso_ms(self.created_ms)
        return {
            "id": self.id,
            "label": self.label,
            "displayOrder": self.display_order,
            "stages": [s.to_json(self.created_ms) for s in self.stages],
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }


def default_pipeline() -> Pipeline:
    """The "Sales Pipeline" a new portal has."""
    stages = [
        PipelineStage(stage_id, label, order, probability, closed)
        for order, (stage_id, label, probability, closed) in enumerate(_DEFAULT_STAGES)
    ]
    return Pipeline(DEFAULT_PIPELINE, "Sales Pipeline", 0, stages)


def deal_properties(pipelines: Collection[Pipeline]) -> dict[str, dict[str, Any]]:
    """The deal properties of a fresh sandbox account, by name."""
    info = "dealinformation"
    stage_options = [
        {
            "label": stage.label,
            "value": stage.id,
            "displayOrder": index,
            "hidden": False,
            "description": f"{pipeline.label}: {stage.label}",
        }
        for pipeline in pipelines
        for index, stage in enumerate(pipeline.stages)
    ]
    pipeline_options = [
        {
            "label": p.label,
            "value": p.id,
            "displayOrder": p.display_order,
            "hidden": False,
            "description": "",
        }
        for p in pipelines
    ]

    def calculated(name: str, label: str, type_: str = "bool") -> dict[str, Any]:
        field_type = "booleancheckbox" if type_ == "bool" else "number"
        definition = make_property(name, label, type_, field_type, group=info, read_only=True)
        definition["calculated"] = True
        return definition

    props = [
        make_property("dealname", "Deal Name", group=info),
        make_property("amount", "Amount", "number", "number", group=info),
        make_property("closedate", "Close Date", "datetime", "date", group=info),
        make_property(
            "dealstage", "Deal Stage", "enumeration", "radio", group=info, options=stage_options
        ),
        make_property(
            "pipeline", "Pipeline", "enumeration", "select", group=info, options=pipeline_options
        ),
        make_property(
            "deal_currency_code",
            "Currency",
            "enumeration",
            "select",
            group=info,
            options=_options([(code, code) for code in CURRENCIES]),
        ),
        make_property(
            "dealtype",
            "Deal Type",
            "enumeration",
            "radio",
            group=info,
            options=_options(
                [("newbusiness", "New Business"), ("existingbusiness", "Existing Business")]
            ),
        ),
        make_property("closed_won_reason", "Closed Won Reason", "string", "textarea", group=info),
        make_property("closed_lost_reason", "Closed Lost Reason", "string", "textarea", group=info),
        make_property(
            "hubspot_owner_id",
            "Deal owner",
            "enumeration",
            "select",
            group=info,
            options=seeded_owner_options(),
            external_options=True,
        ),
        *hubspot_set_properties(info),
        calculated("hs_is_closed", "Is Deal Closed?"),
        calculated("hs_is_closed_won", "Is Closed Won"),
        calculated("hs_is_closed_lost", "Is closed lost"),
        calculated("hs_deal_stage_probability", "Deal Stage Probability", "number"),
    ]
    return {p["name"]: p for p in props}


class DealStore(ContactStore):
    """Deals of the sandbox account, kept as contacts are (no email, no merges)."""

    modified_property: ClassVar[str] = "hs_lastmodifieddate"
    default_read: ClassVar[tuple[str, ...]] = DEFAULT_DEAL_PROPERTIES
    searchable: ClassVar[tuple[str, ...]] = ("dealname",)
    batch_label: ClassVar[str] = "DEAL"
    first_id: ClassVar[int] = FIRST_DEAL_ID

    def __init__(self, clock: Callable[[], float], owner_ids: Callable[[], Collection[str]]):
        self.pipelines: dict[str, Pipeline] = {DEFAULT_PIPELINE: default_pipeline()}
        super().__init__(Schema(deal_properties(self.pipelines.values())), clock)
        self.owner_ids = owner_ids

    @property
    def deals(self) -> dict[int, Contact]:
        """The deals by id (the store's records)."""
        return self.contacts

    # ----------------------------------------------------------------- pipelines

    def pipeline(self, key: str) -> Pipeline:
        """The pipeline ``key`` (HubSpot's 404 when there is none)."""
        found = self.pipelines.get(key)
        if found is None:
            raise not_found(f"Unable to find pipeline {key}", context={"id": [key]})
        return found

    def create_pipeline(self, body: Any) -> Pipeline:
        """``POST /crm/v3/pipelines/deals``: a pipeline with ``label``, ``displayOrder`` and
        ``stages`` (each ``label``, ``displayOrder``, ``metadata.probability``; a stage with
        ``metadata.isClosed`` "true" is closed)."""
        if not isinstance(body, dict) or not isinstance(body.get("label"), str):
            raise validation_error("Invalid input JSON: a pipeline needs a label and stages")
        raw_stages = body.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise validation_error("A pipeline needs at least one stage")
        number = len(self.pipelines)
        # Pipeline and stage ids HubSpot makes are numbers (the exact form is a guess).
        pipeline_id = str(700_000 + number)
        stages = []
        for index, raw in enumerate(raw_stages):
            if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
                raise validation_error("Each stage needs a label")
            metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
            assert isinstance(metadata, dict)
            closed = str(metadata.get("isClosed", "false")).lower() == "true"
            probability = str(metadata.get("probability", "1.0" if closed else "0.5"))
            try:
                if not 0.0 <= float(probability) <= 1.0:
                    raise ValueError(probability)
            except ValueError:
                raise validation_error(
                    f"Stage {raw['label']}: probability must be between 0.0 and 1.0"
                ) from None
            order = raw.get("displayOrder", index)
            stages.append(
                PipelineStage(
                    f"{pipeline_id}{index:03d}",
                    raw["label"],
                    order if isinstance(order, int) else index,
                    probability,
                    closed,
                )
            )
        order = body.get("displayOrder", number)
        pipeline = Pipeline(
            pipeline_id,
            body["label"],
            order if isinstance(order, int) else number,
            stages,
            self.now_ms(),
        )
        self.pipelines[pipeline_id] = pipeline
        fresh = deal_properties(self.pipelines.values())
        for name in ("dealstage", "pipeline"):
            self.schema.properties[name]["options"] = fresh[name]["options"]
        return pipeline

    # ----------------------------------------------------------------- writing

    def prepare(self, raw: Any) -> Props:
        """Validated values; the owner must be one of the portal's."""
        clean = super().prepare(raw)
        owner = clean.get("hubspot_owner_id")
        if owner and owner not in self.owner_ids():
            raise property_errors(
                [
                    property_problem(
                        "hubspot_owner_id", "INVALID_OWNER_ID", f"{owner} is not a valid owner id"
                    )
                ]
            )
        return clean

    @staticmethod
    def check_creatable(clean: Props) -> None:
        """A deal needs its stage (HubSpot's guide: include ``dealname`` and ``dealstage``;
        refusing a deal without a stage is the sandbox's reading of it)."""
        if not clean.get("dealstage"):
            raise property_errors(
                [property_problem("dealstage", "REQUIRED", "dealstage is required")]
            )

    def derive(self, props: Props, old: Props | None, now: int) -> None:
        """Pipeline default, stage check, close date and the calculated closed flags."""
        props.setdefault("pipeline", DEFAULT_PIPELINE)
        pipeline = self.pipelines.get(props["pipeline"])
        stage_id = props.get("dealstage", "")
        stage = pipeline.stage(stage_id) if pipeline is not None else None
        if stage is None:
            # HubSpot refuses a stage of another pipeline; the wording is the sandbox's.
            raise property_errors(
                [
                    property_problem(
                        "dealstage",
                        "INVALID_OPTION",
                        f"{stage_id} is not a stage of pipeline {props['pipeline']}",
                    )
                ]
            )
        was_closed = old is not None and old.get("hs_is_closed") == "true"
        if stage.closed and not was_closed and "closedate" not in props:
            props["closedate"] = iso_ms(now)
        props["hs_is_closed"] = "true" if stage.closed else "false"
        props["hs_is_closed_won"] = "true" if stage.won else "false"
        props["hs_is_closed_lost"] = "true" if stage.closed and not stage.won else "false"
        props["hs_deal_stage_probability"] = stage.probability
