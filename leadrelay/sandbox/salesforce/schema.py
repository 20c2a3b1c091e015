"""Salesforce object schemas, record ids and timestamps, as the REST API describes them.

The emulated org has the standard Lead, Contact, Account, Opportunity, User, Group (queues),
Task, LeadStatus and OpportunityStage objects (the fields a lead-handoff connector touches) plus
leadrelay's custom fields: on Lead the UTM fields, a restricted ``Rejection_Reason__c`` picklist,
the ``LeadRelay_Key__c`` external id, the score, reason and tier, the ``First_Action_At__c`` /
``Accepted_At__c`` date-times the org's Flows stamp, ``Landing_Page__c`` (URL, 255: the landing
page of the lead's first captured touch) and ``Assigned_At__c`` (date-time: written by leadrelay
when it routes the lead; a Flow may restamp it when OwnerId changes by hand); on Opportunity
restricted ``Loss_Reason__c`` and ``Win_Reason__c`` picklists.

A Lead may be owned by a User or a queue (a Group of Type ``Queue``, key prefix 00G); a Task
only by a User. Task.WhoId is polymorphic (Lead or Contact).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

#: Lead Status values of a new org (crm-api-facts §2 "Lead object"): value, converted, default.
LEAD_STATUSES: tuple[tuple[str, bool, bool], ...] = (
    ("Open - Not Contacted", False, True),
    ("Working - Contacted", False, False),
    ("Closed - Converted", True, False),
    ("Closed - Not Converted", False, False),
)
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
INDUSTRIES = (
    "Agriculture", "Apparel", "Banking", "Biotechnology", "Chemicals", "Communications",
    "Construction", "Consulting", "Education", "Electronics", "Energy", "Engineering",
    "Entertainment", "Environmental", "Finance", "Food & Beverage", "Government", "Healthcare",
    "Hospitality", "Insurance", "Machinery", "Manufacturing", "Media", "Not For Profit",
    "Recreation", "Retail", "Shipping", "Technology", "Telecommunications", "Transportation",
    "Utilities", "Other",
)  # fmt: skip
#: The values of an org set up for leadrelay: every value its default mapping writes, plus two
#: of the org's own that leadrelay reads (No Budget).
REJECTION_REASONS = (
    "Bad Fit", "No Budget", "No Authority", "No Need", "Bad Timing", "No Response",
    "Competitor", "Spam / Invalid", "Duplicate", "Existing Customer", "Other",
)  # fmt: skip

#: The values of leadrelay's custom Lead_Tier__c picklist.
LEAD_TIERS = ("Hot", "Warm", "Cold")

#: Opportunity stages of a new org (OpportunityStage: value, IsClosed, IsWon, DefaultProbability,
#: ForecastCategoryName); the first is the default. IsClosed and IsWon of an Opportunity follow
#: its stage's row (crm-api-facts §4 "Opportunity").
OPPORTUNITY_STAGES: tuple[tuple[str, bool, bool, int, str], ...] = (
    ("Prospecting", False, False, 10, "Pipeline"),
    ("Qualification", False, False, 10, "Pipeline"),
    ("Needs Analysis", False, False, 20, "Pipeline"),
    ("Value Proposition", False, False, 50, "Pipeline"),
    ("Id. Decision Makers", False, False, 60, "Pipeline"),
    ("Perception Analysis", False, False, 70, "Pipeline"),
    ("Proposal/Price Quote", False, False, 75, "Pipeline"),
    ("Negotiation/Review", False, False, 90, "Pipeline"),
    ("Closed Won", True, True, 100, "Closed"),
    ("Closed Lost", True, False, 0, "Omitted"),
)
#: The values of leadrelay's custom Opportunity Loss_Reason__c picklist (docs/outcome.md).
LOSS_REASONS = (
    "Price", "Competitor", "No Budget", "No Decision", "Timing", "Missing Features", "Other",
)  # fmt: skip
#: The values of leadrelay's custom Opportunity Win_Reason__c picklist (docs/outcome.md).
WIN_REASONS = ("Price", "Product Fit", "Relationship", "Other")

#: Task Status values of a new org (value, closed); the first is the default.
TASK_STATUSES: tuple[tuple[str, bool], ...] = (
    ("Not Started", False),
    ("In Progress", False),
    ("Completed", True),
    ("Waiting on someone else", False),
    ("Deferred", False),
)
#: Task Priority values of a new org; "Normal" is the default, "High" sets IsHighPriority.
TASK_PRIORITIES = ("High", "Normal", "Low")
#: Group Type values (queues are Groups of Type "Queue").
GROUP_TYPES = ("Regular", "Role", "RoleAndSubordinates", "Organization", "Queue")

#: Field types whose values are strings in JSON and in SOQL literals.
STRING_TYPES = frozenset(
    {"id", "string", "email", "phone", "picklist", "combobox", "textarea", "url", "reference"}
)
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "address": "urn:address",
}
#: GeocodeAccuracy's values (Salesforce field reference, "Compound Fields: Address").
GEOCODE_ACCURACIES = (
    "Address", "NearAddress", "Block", "Street", "ExtendedZip", "Zip", "Neighborhood", "City",
    "County", "State", "Unknown",
)  # fmt: skip
#: The compound Address's components: stored field -> key of the address value.
ADDRESS_PARTS = {
    "Street": "street",
    "City": "city",
    "State": "state",
    "PostalCode": "postalCode",
    "Country": "country",
    "Latitude": "latitude",
    "Longitude": "longitude",
    "GeocodeAccuracy": "geocodeAccuracy",
}


@dataclass
class PicklistValue:
    """One picklist entry as describe shows it."""

    value: str
    label: str
    default: bool = False
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``picklistValues[]`` element of describe."""
        return {
            "active": self.active,
            "defaultValue": self.default,
            "label": self.label,
            "validFor": None,
            "value": self.value,
        }


@dataclass
class FieldDef:
    """One field of an sObject, with what describe reports and what writes must obey."""

    name: str
    label: str
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    picklist: list[PicklistValue] = field(default_factory=list)
    restricted: bool = False
    external_id: bool = False
    unique: bool = False
    reference_to: str | None = None
    #: further sObjects a polymorphic reference accepts (Task.WhoId: Contact besides Lead)
    also_references: tuple[str, ...] = ()
    relationship_name: str | None = None
    custom: bool = False
    precision: int = 0
    scale: int = 0
    #: the compound field this one is a component of (Lead.City: "Address")
    compound: str | None = None

    @property
    def required(self) -> bool:
        """Required on create: createable, not nillable and not defaulted by the server."""
        return self.createable and not self.nillable and not self.defaulted_on_create

    @property
    def filterable(self) -> bool:
        """Usable in WHERE and ORDER BY: not a long text area (more than 255 characters, e.g.
        Description) nor a compound field (Address)."""
        return self.type != "address" and not (self.type == "textarea" and self.length > 255)

    @property
    def references(self) -> tuple[str, ...]:
        """Every sObject the reference accepts, primary first."""
        return (self.reference_to, *self.also_references) if self.reference_to else ()

    def picklist_values(self) -> set[str]:
        """The active values of a picklist."""
        return {entry.value for entry in self.picklist if entry.active}

    def default_value(self) -> str | None:
        """The picklist default, if any."""
        return next((entry.value for entry in self.picklist if entry.default), None)

    def describe(self) -> dict[str, Any]:
        """The ``fields[]`` element of ``sobjects/{name}/describe``."""
        return {
            "autoNumber": False,
            "byteLength": self.length * 3,
            "calculated": False,
            "compoundFieldName": self.compound,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": None,
            "defaultedOnCreate": self.defaulted_on_create,
            "digits": 9 if self.type == "int" else 0,
            "externalId": self.external_id,
            "filterable": self.filterable,
            "idLookup": self.type == "id" or self.name == "Email" or self.external_id,
            "label": self.label,
            "length": self.length,
            "name": self.name,
            "nillable": self.nillable,
            "picklistValues": [entry.to_json() for entry in self.picklist],
            "polymorphicForeignKey": len(self.references) > 1,
            "precision": self.precision,
            "referenceTo": sorted(self.references),
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted,
            "scale": self.scale,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.filterable,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }


@dataclass
class SObjectDef:
    """One sObject type: key prefix, label, fields in describe order, API capabilities."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: dict[str, FieldDef]
    createable: bool = True
    custom: bool = False

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): spec for name, spec in self.fields.items()}

    def field(self, name: str) -> FieldDef | None:
        """The field named ``name`` (API names are case-insensitive), or None."""
        return self._by_lower.get(name.lower())

    def remove_field(self, name: str) -> FieldDef:
        """Drop a field from the schema (an admin deleting it); returns the removed field."""
        spec = self._by_lower.pop(name.lower())
        del self.fields[spec.name]
        return spec

    def add_field(self, spec: FieldDef) -> None:
        """Add a field (an admin creating a custom field); it is listed last by describe."""
        self.fields[spec.name] = spec
        self._by_lower[spec.name.lower()] = spec

    def describe(self, version: str) -> dict[str, Any]:
        """The body of ``sobjects/{name}/describe``."""
        return {**self.basic(version), "fields": [f.describe() for f in self.fields.values()]}

    def basic(self, version: str) -> dict[str, Any]:
        """The ``sobjects[]`` element of the global describe."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "activateable": False,
            "createable": self.createable,
            "custom": self.custom,
            "deletable": self.createable,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "name": self.name,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "updateable": self.createable,
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _system_fields() -> list[FieldDef]:
    return [
        FieldDef("Id", "Record ID", "id", 18, nillable=False, createable=False, updateable=False,
                 defaulted_on_create=True),
        FieldDef("IsDeleted", "Deleted", "boolean", nillable=False, createable=False,
                 updateable=False, defaulted_on_create=True),
    ]  # fmt: skip


def _audit_fields() -> list[FieldDef]:
    readonly: dict[str, Any] = {
        "createable": False, "updateable": False, "nillable": False, "defaulted_on_create": True,
    }  # fmt: skip
    return [
        FieldDef("CreatedDate", "Created Date", "datetime", **readonly),
        FieldDef("CreatedById", "Created By ID", "reference", 18, reference_to="User",
                 relationship_name="CreatedBy", **readonly),
        FieldDef("LastModifiedDate", "Last Modified Date", "datetime", **readonly),
        FieldDef("LastModifiedById", "Last Modified By ID", "reference", 18, reference_to="User",
                 relationship_name="LastModifiedBy", **readonly),
        FieldDef("SystemModstamp", "System Modstamp", "datetime", **readonly),
    ]  # fmt: skip


def _picklist(values: tuple[str, ...], default: str | None = None) -> list[PicklistValue]:
    return [PicklistValue(value, value, default=value == default) for value in values]


def _owner(*, queues: bool = False, label: str = "Owner ID") -> FieldDef:
    """OwnerId: a User, or also a queue (Group) on objects that support queues (Lead)."""
    return FieldDef(
        "OwnerId", label, "reference", 18, nillable=False, defaulted_on_create=True,
        reference_to="User", also_references=("Group",) if queues else (),
        relationship_name="Owner",
    )  # fmt: skip


def _master_record(sobject: str) -> FieldDef:
    """MasterRecordId: on a record deleted by a merge, the surviving record (read-only)."""
    return FieldDef(
        "MasterRecordId", "Master Record ID", "reference", 18, createable=False,
        updateable=False, reference_to=sobject, relationship_name="MasterRecord",
    )  # fmt: skip


def _name_field(length: int = 121) -> FieldDef:
    return FieldDef("Name", "Full Name", "string", length, createable=False, updateable=False)


def _lead() -> SObjectDef:
    readonly: dict[str, Any] = {"createable": False, "updateable": False}
    fields = [
        *_system_fields(),
        FieldDef("FirstName", "First Name", "string", 40),
        FieldDef("LastName", "Last Name", "string", 80, nillable=False),
        _name_field(),
        FieldDef("Title", "Title", "string", 128),
        FieldDef("Company", "Company", "string", 255, nillable=False),
        FieldDef("Email", "Email", "email", 80),
        FieldDef("Phone", "Phone", "phone", 40),
        FieldDef("MobilePhone", "Mobile Phone", "phone", 40),
        FieldDef("Website", "Website", "url", 255),
        FieldDef("Description", "Description", "textarea", 32000),
        # The compound Address is read-only; its components are written one by one.
        FieldDef("Street", "Street", "textarea", 255, compound="Address"),
        FieldDef("City", "City", "string", 40, compound="Address"),
        FieldDef("State", "State/Province", "string", 80, compound="Address"),
        FieldDef("PostalCode", "Zip/Postal Code", "string", 20, compound="Address"),
        FieldDef("Country", "Country", "string", 80, compound="Address"),
        FieldDef("Latitude", "Latitude", "double", precision=18, scale=15, compound="Address"),
        FieldDef("Longitude", "Longitude", "double", precision=18, scale=15, compound="Address"),
        FieldDef("GeocodeAccuracy", "Geocode Accuracy", "picklist", 40, restricted=True,
                 picklist=_picklist(GEOCODE_ACCURACIES), compound="Address"),
        FieldDef("Address", "Address", "address", **readonly),
        FieldDef("LeadSource", "Lead Source", "picklist", 255, picklist=_picklist(LEAD_SOURCES)),
        FieldDef("Status", "Lead Status", "picklist", 255, nillable=False,
                 defaulted_on_create=True, restricted=True,
                 picklist=_picklist(tuple(s for s, _, _ in LEAD_STATUSES), LEAD_STATUSES[0][0])),
        FieldDef("Industry", "Industry", "picklist", 255, picklist=_picklist(INDUSTRIES)),
        FieldDef("NumberOfEmployees", "Employees", "int", precision=8),
        FieldDef("AnnualRevenue", "Annual Revenue", "currency", precision=18),
        _owner(queues=True),
        FieldDef("IsConverted", "Converted", "boolean", nillable=False, defaulted_on_create=True,
                 **readonly),
        FieldDef("ConvertedDate", "Converted Date", "date", **readonly),
        FieldDef("ConvertedAccountId", "Converted Account ID", "reference", 18,
                 reference_to="Account", relationship_name="ConvertedAccount", **readonly),
        FieldDef("ConvertedContactId", "Converted Contact ID", "reference", 18,
                 reference_to="Contact", relationship_name="ConvertedContact", **readonly),
        FieldDef("ConvertedOpportunityId", "Converted Opportunity ID", "reference", 18,
                 reference_to="Opportunity", relationship_name="ConvertedOpportunity",
                 **readonly),
        _master_record("Lead"),
        *_audit_fields(),
        *(
            FieldDef(f"UTM_{part}__c", f"UTM {part}", "string", 255, custom=True)
            for part in ("Source", "Medium", "Campaign", "Term", "Content")
        ),
        FieldDef("Rejection_Reason__c", "Rejection Reason", "picklist", 255, custom=True,
                 restricted=True, picklist=_picklist(REJECTION_REASONS)),
        FieldDef("LeadRelay_Key__c", "LeadRelay Key", "string", 255, custom=True,
                 external_id=True, unique=True),
        FieldDef("Lead_Score__c", "Lead Score", "double", precision=5, custom=True),
        FieldDef("Qualification_Reason__c", "Qualification Reason", "textarea", 255,
                 custom=True),
        FieldDef("Lead_Tier__c", "Lead Tier", "picklist", 255, custom=True, restricted=True,
                 picklist=_picklist(LEAD_TIERS)),
        # Sales' SLA stamps, set by the org's record-triggered Flows (README: custom fields).
        FieldDef("First_Action_At__c", "First Action At", "datetime", custom=True),
        FieldDef("Accepted_At__c", "Accepted At", "datetime", custom=True),
        FieldDef("Landing_Page__c", "Landing Page", "url", 255, custom=True),
        # Written by leadrelay when it routes the lead; a Flow may restamp it on a manual
        # OwnerId change.
        FieldDef("Assigned_At__c", "Assigned At", "datetime", custom=True),
    ]  # fmt: skip
    return SObjectDef("Lead", "Lead", "Leads", "00Q", {f.name: f for f in fields})


def _contact() -> SObjectDef:
    fields = [
        *_system_fields(),
        FieldDef("FirstName", "First Name", "string", 40),
        FieldDef("LastName", "Last Name", "string", 80, nillable=False),
        _name_field(),
        FieldDef("AccountId", "Account ID", "reference", 18, reference_to="Account",
                 relationship_name="Account"),
        FieldDef("Title", "Title", "string", 128),
        FieldDef("Email", "Email", "email", 80),
        FieldDef("Phone", "Business Phone", "phone", 40),
        FieldDef("MobilePhone", "Mobile Phone", "phone", 40),
        FieldDef("LeadSource", "Lead Source", "picklist", 255, picklist=_picklist(LEAD_SOURCES)),
        FieldDef("MailingStreet", "Mailing Street", "textarea", 255),
        FieldDef("MailingCity", "Mailing City", "string", 40),
        FieldDef("MailingState", "Mailing State/Province", "string", 80),
        FieldDef("MailingPostalCode", "Mailing Zip/Postal Code", "string", 20),
        FieldDef("MailingCountry", "Mailing Country", "string", 80),
        FieldDef("Description", "Contact Description", "textarea", 32000),
        _owner(),
        _master_record("Contact"),
        *_audit_fields(),
    ]  # fmt: skip
    return SObjectDef("Contact", "Contact", "Contacts", "003", {f.name: f for f in fields})


def _account() -> SObjectDef:
    fields = [
        *_system_fields(),
        FieldDef("Name", "Account Name", "string", 255, nillable=False),
        FieldDef("Industry", "Industry", "picklist", 255, picklist=_picklist(INDUSTRIES)),
        FieldDef("Website", "Website", "url", 255),
        FieldDef("Phone", "Account Phone", "phone", 40),
        FieldDef("NumberOfEmployees", "Employees", "int", precision=8),
        FieldDef("AnnualRevenue", "Annual Revenue", "currency", precision=18),
        FieldDef("BillingCity", "Billing City", "string", 40),
        FieldDef("BillingState", "Billing State/Province", "string", 80),
        FieldDef("BillingPostalCode", "Billing Zip/Postal Code", "string", 20),
        FieldDef("BillingCountry", "Billing Country", "string", 80),
        FieldDef("Description", "Account Description", "textarea", 32000),
        _owner(),
        *_audit_fields(),
    ]  # fmt: skip
    return SObjectDef("Account", "Account", "Accounts", "001", {f.name: f for f in fields})


def _opportunity() -> SObjectDef:
    readonly: dict[str, Any] = {
        "createable": False, "updateable": False, "nillable": False, "defaulted_on_create": True,
    }  # fmt: skip
    # StageName is restricted here: IsClosed / IsWon are derived from the stage's
    # OpportunityStage row, which an unknown value lacks (a guess: the API refusing an unknown
    # stage with INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST is not verified).
    fields = [
        *_system_fields(),
        FieldDef("AccountId", "Account ID", "reference", 18, reference_to="Account",
                 relationship_name="Account"),
        FieldDef("Name", "Name", "string", 120, nillable=False),
        FieldDef("Description", "Description", "textarea", 32000),
        FieldDef("StageName", "Stage", "picklist", 255, nillable=False, restricted=True,
                 picklist=_picklist(tuple(s[0] for s in OPPORTUNITY_STAGES))),
        FieldDef("Amount", "Amount", "currency", precision=18, scale=2),
        FieldDef("CloseDate", "Close Date", "date", nillable=False),
        FieldDef("IsClosed", "Closed", "boolean", **readonly),
        FieldDef("IsWon", "Won", "boolean", **readonly),
        FieldDef("LeadSource", "Lead Source", "picklist", 255, picklist=_picklist(LEAD_SOURCES)),
        _owner(),
        *_audit_fields(),
        FieldDef("Loss_Reason__c", "Loss Reason", "picklist", 255, custom=True,
                 restricted=True, picklist=_picklist(LOSS_REASONS)),
        FieldDef("Win_Reason__c", "Win Reason", "picklist", 255, custom=True,
                 restricted=True, picklist=_picklist(WIN_REASONS)),
    ]  # fmt: skip
    return SObjectDef(
        "Opportunity", "Opportunity", "Opportunities", "006", {f.name: f for f in fields}
    )


def _opportunity_stage() -> SObjectDef:
    fields = [
        *_system_fields()[:1],
        FieldDef("MasterLabel", "Master Label", "string", 255, nillable=False),
        FieldDef("ApiName", "Api Name", "string", 255, nillable=False),
        FieldDef("IsActive", "Is Active", "boolean", nillable=False),
        FieldDef("SortOrder", "Sort Order", "int", precision=9),
        FieldDef("IsClosed", "Is Closed", "boolean", nillable=False),
        FieldDef("IsWon", "Is Won", "boolean", nillable=False),
        FieldDef("DefaultProbability", "Default Probability (%)", "double", precision=3),
        FieldDef("ForecastCategoryName", "Forecast Category Name", "string", 40),
        *_audit_fields(),
    ]
    return SObjectDef(
        "OpportunityStage", "Opportunity Stage", "Opportunity Stage", "01J",
        {f.name: f for f in fields}, createable=False,
    )  # fmt: skip


def _user() -> SObjectDef:
    fields = [
        *_system_fields()[:1],
        FieldDef("Username", "Username", "string", 80, nillable=False, unique=True),
        FieldDef("FirstName", "First Name", "string", 40),
        FieldDef("LastName", "Last Name", "string", 80, nillable=False),
        _name_field(),
        FieldDef("Alias", "Alias", "string", 8, nillable=False),
        FieldDef("Email", "Email", "email", 128, nillable=False),
        FieldDef("Title", "Title", "string", 80),
        FieldDef("Department", "Department", "string", 80),
        FieldDef("IsActive", "Active", "boolean", nillable=False, defaulted_on_create=True),
        FieldDef("UserRoleId", "Role ID", "reference", 18),
        *_audit_fields(),
    ]  # fmt: skip
    return SObjectDef("User", "User", "Users", "005", {f.name: f for f in fields}, createable=False)


def _lead_status() -> SObjectDef:
    fields = [
        *_system_fields()[:1],
        FieldDef("MasterLabel", "Master Label", "string", 255, nillable=False),
        FieldDef("ApiName", "Api Name", "string", 255, nillable=False),
        FieldDef("SortOrder", "Sort Order", "int", precision=9),
        FieldDef("IsDefault", "Is Default", "boolean", nillable=False),
        FieldDef("IsConverted", "Is Converted", "boolean", nillable=False),
        *_audit_fields(),
    ]
    return SObjectDef(
        "LeadStatus", "Lead Status Value", "Lead Status Value", "01J",
        {f.name: f for f in fields}, createable=False,
    )  # fmt: skip


def _group() -> SObjectDef:
    fields = [
        *_system_fields()[:1],
        FieldDef("Name", "Name", "string", 40, nillable=False),
        FieldDef("DeveloperName", "Developer Name", "string", 80, nillable=False),
        FieldDef("Type", "Type", "picklist", 40, nillable=False, restricted=True,
                 picklist=_picklist(GROUP_TYPES)),
        FieldDef("Email", "Email", "email", 255),
        FieldDef("DoesSendEmailToMembers", "Send Email to Members", "boolean", nillable=False,
                 defaulted_on_create=True),
        *_audit_fields(),
    ]  # fmt: skip
    return SObjectDef("Group", "Group", "Groups", "00G", {f.name: f for f in fields},
                      createable=False)  # fmt: skip


def _task() -> SObjectDef:
    readonly: dict[str, Any] = {
        "createable": False, "updateable": False, "nillable": False, "defaulted_on_create": True,
    }  # fmt: skip
    fields = [
        *_system_fields(),
        FieldDef("WhoId", "Name ID", "reference", 18, reference_to="Lead",
                 also_references=("Contact",), relationship_name="Who"),
        FieldDef("WhatId", "Related To ID", "reference", 18, reference_to="Account",
                 relationship_name="What"),
        FieldDef("Subject", "Subject", "combobox", 255),
        FieldDef("ActivityDate", "Due Date Only", "date"),
        FieldDef("Status", "Status", "picklist", 40, nillable=False, defaulted_on_create=True,
                 restricted=True,
                 picklist=_picklist(tuple(s for s, _ in TASK_STATUSES), TASK_STATUSES[0][0])),
        FieldDef("Priority", "Priority", "picklist", 40, nillable=False,
                 defaulted_on_create=True, restricted=True,
                 picklist=_picklist(TASK_PRIORITIES, "Normal")),
        FieldDef("IsHighPriority", "High Priority", "boolean", **readonly),
        _owner(label="Assigned To ID"),
        FieldDef("Description", "Description", "textarea", 32000),
        FieldDef("IsClosed", "Closed", "boolean", **readonly),
        FieldDef("IsReminderSet", "Reminder Set", "boolean", nillable=False,
                 defaulted_on_create=True),
        FieldDef("ReminderDateTime", "Reminder Date/Time", "datetime"),
        *_audit_fields(),
    ]  # fmt: skip
    return SObjectDef("Task", "Task", "Tasks", "00T", {f.name: f for f in fields})


def default_schema() -> dict[str, SObjectDef]:
    """A fresh copy of the emulated org's schema, keyed by sObject name."""
    objects = [
        _lead(), _contact(), _account(), _opportunity(), _user(), _group(), _task(),
        _lead_status(), _opportunity_stage(),
    ]  # fmt: skip
    return {sobject.name: copy.deepcopy(sobject) for sobject in objects}


# --- record ids --------------------------------------------------------------------------

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
ORG_ID = "00D5g000004SBOXEAW"


def id_suffix(id15: str) -> str:
    """The 3-character case-safe suffix that turns a 15-character id into 18 characters."""
    out = []
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(id15[start : start + 5]) if "A" <= ch <= "Z")
        out.append(_SUFFIX[bits])
    return "".join(out)


def make_id(prefix: str, sequence: int) -> str:
    """An 18-character id: key prefix, pod ``5g``, a base-62 sequence, the checksum suffix.

    Sequences are fixed-width base 62 in ASCII order, so ids sort in creation order.
    """
    digits = []
    for _ in range(7):
        sequence, rest = divmod(sequence, 62)
        digits.append(_BASE62[rest])
    id15 = f"{prefix}5g000{''.join(reversed(digits))}"
    return id15 + id_suffix(id15)


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None if it is not an id."""
    if len(value) not in (15, 18) or not value.isalnum() or not value.isascii():
        return None
    if len(value) == 15:
        return value + id_suffix(value)
    if id_suffix(value[:15]) != value[15:].upper() and id_suffix(value[:15]) != value[15:]:
        return None
    return value[:15] + id_suffix(value[:15])


# --- timestamps --------------------------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """The REST API form ``2024-01-01T00:00:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def address_value(record: dict[str, Any]) -> dict[str, Any] | None:
    """The compound ``Address`` of a record from its components; None when all are blank."""
    parts = {key: record.get(name) for name, key in ADDRESS_PARTS.items()}
    if all(value is None for value in parts.values()):
        return None
    return dict(sorted(parts.items()))


def format_value(value: Any) -> Any:
    """A stored value as JSON shows it."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
