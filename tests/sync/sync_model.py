"""A reference model of two-way sync and a hypothesis state machine that checks leadrelay
against it on the sandbox (issue 12).

The machine drives HubSpot, Salesforce and Zoho through leadrelay's connectors over real HTTP
(what a marketer or a sales rep would do in the vendors' UIs): it creates HubSpot contacts,
edits mapped fields on any side, sets a sales verdict (a disqualifying status with its
rejection reason) in a CRM, deletes records on any side, merges contacts in HubSpot and leads
in Zoho, converts a Salesforce Lead into an Opportunity, and runs ``leadrelay sync`` (the
command), sometimes killed after a random number of API calls and then run again cleanly.

:class:`LeadModel` is the reference: what each system should hold for each lead after a quiet
sync. Its rules, from DESIGN §7 and the engine's docstrings:

- a field edited on one system only since the last quiet sync ends with that value on every
  system the lead is linked in (for ``two_way`` fields: whatever the record times);
- a ``two_way`` field edited on several systems is a conflict: the engine keeps the value of
  the record changed last, and leadrelay's own writes earlier in the same run move those record
  times, so the model does not predict the winner; it requires one of the edited values and the
  same value everywhere (then takes it as the truth);
- ``utm_source`` is marketing's (``source_wins``): edited in HubSpot only, it reaches the CRMs;
- a CRM's verdict (stage ``disqualified`` and its reason) reaches HubSpot and the other CRM,
  after its recycle play (``[recycle]`` defaults): a nurtured reason comes back ``recycled``
  (which Salesforce writes as "Open - Not Contacted" and reads as ``lead``); when something
  else changed the lead around the verdict, record times decide that stage (``stage_side``),
  and the model predicts stage and reason in the verdict's CRM only;
- a deleted record is never re-created; with the default ``on_delete = "keep"`` the other side
  is left alone: a lead whose HubSpot contact is gone lives on separately in each CRM; with
  ``on_delete = "propagate"`` (:class:`PropagatingSyncMachine`) a lead deleted anywhere after it
  was synced is gone everywhere after the next sync;
- a Salesforce Lead converted into an Opportunity takes no more writes: its values stay as they
  were, its stage is the Opportunity's (what HubSpot and Zoho make of it is not modelled), and
  HubSpot and Zoho go on syncing with each other;
- a merge of two contacts in HubSpot (one person twice) leaves one contact, a new record: the
  primary's lead lives on in it (values only the other contact had fill its blanks, and reach
  the primary's CRM records), the other lead's contact is gone for good (its e-mail now finds
  the merged contact) and its CRM records live on, on their own.

After each quiet sync every live HubSpot contact is in each CRM exactly once (unless its record
there was deleted, or it was archived before it got there), nothing deleted is back, every
modelled field equals the model, and a second sync writes nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import httpx
import typer
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from leadrelay.config import load_config
from leadrelay.connectors.base import Connector, UpsertInput
from leadrelay.mappings.engine import Mapping, build_lead, load_mapping
from leadrelay.sandbox.project import write_sandbox_project
from leadrelay.sandbox.server import SandboxServer
from leadrelay.sync.commands import sync_command
from leadrelay.sync.engine import ConnectorPool
from leadrelay.sync.plan import canonical_value
from tests.hubspot_sandbox import hubspot_api

HUBSPOT, SALESFORCE, ZOHO = "hubspot", "salesforce", "zoho"
SYSTEMS = (HUBSPOT, SALESFORCE, ZOHO)
CRMS = (SALESFORCE, ZOHO)

#: Canonical field -> the system field a person edits, per system (the sandbox's mappings).
FIELDS: dict[str, dict[str, str]] = {
    "first_name": {HUBSPOT: "firstname", SALESFORCE: "FirstName", ZOHO: "First_Name"},
    "last_name": {HUBSPOT: "lastname", SALESFORCE: "LastName", ZOHO: "Last_Name"},
    "company": {HUBSPOT: "company", SALESFORCE: "Company", ZOHO: "Company"},
    "city": {HUBSPOT: "city", SALESFORCE: "City", ZOHO: "City"},
    "phone": {HUBSPOT: "phone", SALESFORCE: "Phone", ZOHO: "Phone"},
    "job_title": {HUBSPOT: "jobtitle", SALESFORCE: "Title", ZOHO: "Designation"},
    "utm_source": {HUBSPOT: "utm_source", SALESFORCE: "UTM_Source__c", ZOHO: "UTM_Source"},
}
#: Canonical field -> the Contact field that holds it after a conversion (the connector reads
#: a converted Lead's details from its Contact).
CONTACT_FIELDS: dict[str, str] = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "city": "MailingCity",
    "phone": "Phone",
    "job_title": "Title",
}
#: Fields every side may edit (default rule ``two_way``).
TWO_WAY = ("first_name", "last_name", "company", "city", "phone", "job_title")
#: Fields marketing owns (``source_wins``): edited in HubSpot only.
SOURCE_OWNED = ("utm_source",)
#: The id key of each system's raw records.
ID_KEY = {HUBSPOT: "hs_object_id", SALESFORCE: "Id", ZOHO: "id"}

#: Rejection reasons as sales picks them: canonical -> (Salesforce label, Zoho label). The
#: recycle play of each (``[recycle]`` defaults): disqualify for the first three, nurture (back to
#: marketing as ``recycled``) for the others.
REASONS: dict[str, tuple[str, str]] = {
    "competitor": ("Competitor", "Competitor"),
    "wrong_role": ("No Authority", "Wrong Role"),
    "bad_fit": ("Bad Fit", "Not a fit"),
    "timing": ("Bad Timing", "Bad Timing"),
    "no_need": ("No Need", "No Need"),
}
NURTURED = frozenset({"timing", "no_need"})
#: How each system reads a nurtured lead back (Salesforce has no recycled status: it writes
#: "Open - Not Contacted", read as lead).
RECYCLED_AS = {HUBSPOT: "recycled", SALESFORCE: "lead", ZOHO: "recycled"}
#: Fields only a verdict sets: each system keeps its own value until the next verdict.
VERDICT_FIELDS = ("stage", "rejection_reason")
#: Seconds of record-time uncertainty (Zoho's Modified_Time has whole seconds).
CLOCK_SLACK_S = 1.1

#: Statuses that close a lead as disqualified.
CLOSING_STATUS = {
    SALESFORCE: ("Status", ["Closed - Not Converted"]),
    ZOHO: ("Lead_Status", ["Not Qualified", "Junk Lead", "Lost Lead"]),
}
#: Every lead of one example has a distinct address in this domain.
EMAIL_DOMAIN = "model.example.com"

# -- values a person types ----------------------------------------------------------------

FIRST_NAMES = st.sampled_from(["Ann", "Bo", "Zoë", "Łukasz", "María José", "Jean-Luc", "Ngozi"])
LAST_NAMES = st.sampled_from(["Lee", "O'Neil", "Müller", "García Díaz", "Okafor", "Ng", "Smith"])
COMPANIES = st.sampled_from(["Acme", "Globex", "Initech", "Umbrella Corp", "Hooli", "Ça Va SA"])
CITIES = st.sampled_from(["Paris", "Lagos", "São Paulo", "Kraków", "Austin", "Osaka"])
PHONES = st.integers(0, 9999).map(lambda n: f"+1415555{n:04d}")
JOB_TITLES = st.sampled_from(["Engineer", "Marketing Manager", "VP Sales", "Analyst", "Buyer"])
UTM_SOURCES = st.sampled_from(["google", "facebook", "linkedin", "newsletter"])
VALUES: dict[str, st.SearchStrategy[str]] = {
    "first_name": FIRST_NAMES,
    "last_name": LAST_NAMES,
    "company": COMPANIES,
    "city": CITIES,
    "phone": PHONES,
    "job_title": JOB_TITLES,
    "utm_source": UTM_SOURCES,
}


# -- the reference model ------------------------------------------------------------------


@dataclass(frozen=True)
class Either:
    """A conflict the model does not decide: any of ``values``, the same on every system."""

    values: frozenset[Any]


@dataclass
class Verdict:
    """Sales closed the lead in ``crm`` as disqualified with ``reason`` (at ``at``, monotonic)."""

    crm: str
    reason: str
    at: float
    pending: bool = True
    #: Something else may have changed the lead around the same time (see LeadModel.settle).
    raced: bool = False


@dataclass
class LeadModel:
    """What one lead should look like on each system.

    Attributes:
        email: its address (never edited: it is the identity).
        ids: the record id on each system, once known.
        present: the systems holding a record of it now.
        gone: the systems where the test deleted its record (never to come back).
        values: per system, canonical field -> value (an :class:`Either` until checked).
        pending: canonical field -> system -> value edited there since the last quiet sync.
        verdict: the verdict of sales (one per lead).
        unmodelled: (system, field) the model no longer predicts.
        touched: when the test last changed the lead's record on each system (monotonic).
        deleted_in: the systems where the test deleted its record (not merged it away).
        merged_into: the e-mail of the lead whose HubSpot contact this one's was merged into.
        converted: sales converted its Salesforce Lead (which then takes no more writes).
        contact_id: the Contact of the conversion, where sales edits the person after it.
    """

    email: str
    ids: dict[str, str] = field(default_factory=dict)
    present: set[str] = field(default_factory=lambda: {HUBSPOT})
    gone: set[str] = field(default_factory=set)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdict: Verdict | None = None
    unmodelled: set[tuple[str, str]] = field(default_factory=set)
    touched: dict[str, float] = field(default_factory=dict)
    deleted_in: set[str] = field(default_factory=set)
    merged_into: str | None = None
    converted: bool = False
    contact_id: str | None = None

    def live(self, system: str) -> bool:
        """The lead has a record on ``system`` that the test has not deleted."""
        return system in self.present and system not in self.gone

    def edit(self, system: str, name: str, value: Any, at: float) -> None:
        """A person set ``name`` to ``value`` on ``system`` at ``at`` (monotonic)."""
        self.values.setdefault(system, {})[name] = value
        self.pending.setdefault(name, {})[system] = value
        self._touched(system, at)

    def close(self, crm: str, reason: str, at: float) -> None:
        """Sales closed the lead in ``crm`` as disqualified with ``reason``."""
        self.verdict = Verdict(crm, reason, at)
        self.values.setdefault(crm, {}).update(stage="disqualified", rejection_reason=reason)

    def delete(self, system: str) -> None:
        """A person deleted (HubSpot: archived) the lead's record on ``system``."""
        self.deleted_in.add(system)
        self._drop(system)

    def merged_away(self, into: LeadModel) -> None:
        """Its HubSpot contact was merged into ``into``'s: gone from HubSpot, edits there
        not yet synced included (they live on in the merged contact when it lacked them)."""
        self.merged_into = into.email
        self._drop(HUBSPOT)
        for edits in self.pending.values():
            edits.pop(HUBSPOT, None)

    def take_over_by(self, primary: LeadModel) -> None:
        """Its CRM records (and their edits not yet synced) now belong to ``primary``'s lead;
        a CRM record it had deleted stays deleted for that lead."""
        for crm in CRMS:
            if crm in self.gone:
                primary.gone.add(crm)
                primary.present.discard(crm)
            if not self.live(crm):
                continue
            primary.ids[crm] = self.ids[crm]
            primary.present.add(crm)
            primary.values[crm] = self.values.pop(crm, {})
            for name, edits in self.pending.items():
                if crm in edits:
                    primary.pending.setdefault(name, {})[crm] = edits.pop(crm)
            self._drop(crm)

    def _drop(self, system: str) -> None:
        self.gone.add(system)
        self.present.discard(system)
        self.values.pop(system, None)

    def convert(self, stage: str) -> None:
        """Sales converted the Salesforce Lead into an Opportunity at ``stage``: the Lead is
        frozen (Salesforce refuses updates; leadrelay sends none), its stage is the
        Opportunity's; what the other systems make of that stage is not modelled."""
        self.converted = True
        self.values.setdefault(SALESFORCE, {})["stage"] = stage
        self.values[SALESFORCE].pop("rejection_reason", None)
        for system in (HUBSPOT, ZOHO):
            for name in VERDICT_FIELDS:
                self.unmodelled.add((system, name))
                self.values.get(system, {}).pop(name, None)

    def propagate(self) -> None:
        """``on_delete = "propagate"``: a lead deleted on one system after it was synced to
        another is deleted on every system by the next sync."""
        if self.deleted_in and len(self.ids) > 1:
            for system in list(self.present):
                self._drop(system)

    def interrupted(self) -> None:
        """A sync died: what it wrote moved record times the model does not know."""
        if self.verdict is not None and self.verdict.pending:
            self.verdict.raced = True

    def _touched(self, system: str, at: float) -> None:
        verdict = self.verdict
        if verdict is not None and verdict.pending and system != verdict.crm:
            verdict.raced = True
        self.touched[system] = at

    def groups(self) -> list[set[str]]:
        """The sets of systems a quiet sync keeps equal: HubSpot with each CRM while its contact
        lives (or is still to be made from a lead sales created); without it, each CRM on its
        own (nothing syncs CRM to CRM directly)."""
        if HUBSPOT in self.gone:
            return [{crm} for crm in CRMS if self.live(crm)]
        if not any(self.live(system) for system in SYSTEMS):
            return []  # made in a CRM and deleted there before any sync
        frozen = {SALESFORCE} if self.converted and self.live(SALESFORCE) else set()
        group = {HUBSPOT} | {crm for crm in CRMS if crm not in self.gone} - frozen
        return [group, *([frozen] if frozen else [])]

    def settle(self) -> None:
        """Apply a quiet sync: reach every CRM the lead belongs in, carry every edit."""
        for group in self.groups():
            members = [s for s in SYSTEMS if s in group]
            # A converted Lead takes no writes, but its Contact's edits stand for the Lead's
            # and reach the systems linked with it through HubSpot.
            feeds = group | (
                {SALESFORCE}
                if self.converted and self.live(SALESFORCE) and HUBSPOT in group
                else set()
            )
            names = {n for s in members for n in self.values.get(s, {})} | set(self.pending)
            settled: dict[str, Any] = {}
            for name in names - set(VERDICT_FIELDS):
                edits = {v for s, v in self.pending.get(name, {}).items() if s in feeds}
                if len(edits) == 1:
                    settled[name] = next(iter(edits))
                elif edits:
                    settled[name] = Either(frozenset(edits))
                    TOTALS["conflicts"] += 1
                elif HUBSPOT in group and name in self.values.get(HUBSPOT, {}):
                    settled[name] = self.values[HUBSPOT][name]
                else:
                    known = [self.values[s] for s in members if name in self.values.get(s, {})]
                    if known:
                        settled[name] = known[0][name]
            for system in members:
                self.present.add(system)
                kept = {n: v for n, v in self.values.get(system, {}).items() if n in VERDICT_FIELDS}
                self.values[system] = {**settled, **kept}
            self._carry_verdict(members)
        self.pending.clear()
        if self.verdict is not None:
            self.verdict.pending = False

    def _carry_verdict(self, members: list[str]) -> None:
        """A verdict reaches every system linked with its CRM through HubSpot.

        Its recycle play applies on the way back: a nurtured lead is ``recycled`` in HubSpot and
        the other CRM. That stage stands against HubSpot's own only while the CRM record is the
        newer (``stage_side``'s ``source_newer``): when HubSpot (or, for a Zoho verdict, the
        Salesforce flow that runs first) changed the lead around the same time, record times
        decide and the model stops predicting stage and reason outside the verdict's CRM.
        """
        verdict = self.verdict
        if verdict is None or not verdict.pending or verdict.crm not in members:
            return
        nurtured = verdict.reason in NURTURED
        raced = nurtured and (
            verdict.raced
            or any(
                at >= verdict.at - CLOCK_SLACK_S
                for system, at in self.touched.items()
                if system != verdict.crm
            )
        )
        for system in members:
            if system == verdict.crm:
                continue
            if raced:
                for name in VERDICT_FIELDS:
                    self.unmodelled.add((system, name))
                    self.values[system].pop(name, None)
                continue
            stage = RECYCLED_AS[system] if nurtured else "disqualified"
            self.values[system].update(stage=stage, rejection_reason=verdict.reason)


# -- the machine --------------------------------------------------------------------------


class Killed(BaseException):
    """The sync process died (raised from inside a connector call, past every handler)."""


@contextlib.contextmanager
def killed_after(calls: int) -> Iterator[None]:
    """The sync dies at the ``calls + 1``-th HTTP attempt of any connector from now on."""
    original = Connector.count_call
    made = 0

    def count_call(self: Connector[Any]) -> None:
        nonlocal made
        made += 1
        if made > calls:
            raise Killed(f"sync killed at API call {made}")
        original(self)

    with mock.patch.object(Connector, "count_call", count_call):
        yield


def _sync_app() -> typer.Typer:
    app = typer.Typer()
    app.command("sync")(sync_command)

    @app.command("version")
    def _version() -> None:  # a second command keeps "sync" a subcommand
        """Unused."""

    return app


def stories(examples: int, steps: int, *, derandomize: bool = False) -> settings:
    """Hypothesis settings for ``examples`` stories of up to ``steps`` operations and syncs;
    ``derandomize``: the same stories every run (``make test`` gates on them; ``make soak``
    explores new ones)."""
    return settings(
        max_examples=examples,
        derandomize=derandomize,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        # shrinking replays whole stories over HTTP for many minutes: the steps as found are shown
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )


#: Counts over a whole test session (``make soak`` prints them).
TOTALS: Counter[str] = Counter()


class TwoWaySyncMachine(RuleBasedStateMachine):
    """Random operations on the three systems interleaved with syncs, checked against
    :class:`LeadModel` after each quiet sync. Set :attr:`sandbox` and :attr:`workdir` first."""

    sandbox: ClassVar[SandboxServer]
    workdir: ClassVar[Path]
    max_leads: ClassVar[int] = 5
    #: Deletions end a lead's story: a few per example leave the others time to be edited.
    max_deletes: ClassVar[int] = 2
    max_merges: ClassVar[int] = 1
    max_conversions: ClassVar[int] = 2
    #: The flows' ``on_delete``.
    on_delete: ClassVar[str] = "keep"

    def __init__(self) -> None:
        super().__init__()
        self._admin("reset", {})
        self.folder = Path(tempfile.mkdtemp(dir=self.workdir))
        write_sandbox_project(self.folder, self.sandbox.env())
        toml = self.folder / "leadrelay.toml"
        if self.on_delete != "keep":
            text = toml.read_text(encoding="utf-8").replace(
                "two_way = true\n", f'two_way = true\non_delete = "{self.on_delete}"\n'
            )
            toml.write_text(text, encoding="utf-8")
        self.config = load_config(toml)
        self.pool = ConnectorPool(self.config)
        self.mappings: dict[str, Mapping] = {s: load_mapping(s) for s in SYSTEMS}
        self.app = _sync_app()
        self.leads: list[LeadModel] = []
        self.serial = 0
        self.changes = 0
        self.deletes = 0
        self.merges = 0
        self.conversions = 0

    def teardown(self) -> None:
        self.pool.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- plumbing -----------------------------------------------------------------------

    def _admin(self, path: str, body: dict[str, Any]) -> Any:
        context = ssl.create_default_context(cafile=str(self.sandbox.ca_bundle))
        with httpx.Client(verify=context) as client:
            response = client.post(f"{self.sandbox.url}/__sandbox__/{path}", json=body)
            response.raise_for_status()
            return response.json()

    def _connector(self, system: str) -> Connector[Any]:
        return self.pool.get(system)

    def run_sync(self) -> tuple[int, dict[str, Any]]:
        """``leadrelay sync --json`` for every flow of the project: exit code and report."""
        out = io.StringIO()
        args = ["sync", "--config", str(self.folder / "leadrelay.toml"), "--json"]
        with contextlib.redirect_stdout(out):
            code = self.app(args=args, standalone_mode=False) or 0
        TOTALS["syncs"] += 1
        return int(code), json.loads(out.getvalue())

    def write(self, system: str, record_id: str, fields: dict[str, Any]) -> None:
        """Change one record through the system's API, as a person would in its UI."""
        [result] = self._connector(system).update({record_id: fields})
        assert result.ok, f"{system} refused {fields} for {record_id}: {result.error}"

    def _changed(self, what: str) -> None:
        self.changes += 1
        TOTALS["operations"] += 1
        TOTALS[what] += 1

    @staticmethod
    def _editable(lead: LeadModel, system: str) -> bool:
        """A person can change the lead's record there (a converted Salesforce Lead: no)."""
        return lead.live(system) and not (lead.converted and system == SALESFORCE)

    def _pick(self, data: st.DataObject, systems: tuple[str, ...]) -> tuple[LeadModel, str]:
        choices = [(lead, s) for lead in self.leads for s in systems if self._editable(lead, s)]
        return data.draw(st.sampled_from(choices), label="lead and system")

    def _linked(self) -> list[tuple[LeadModel, str]]:
        """(lead, CRM) with a live record on both HubSpot and that CRM."""
        return [
            (lead, crm)
            for lead in self.leads
            for crm in CRMS
            if lead.live(HUBSPOT) and self._editable(lead, crm)
        ]

    def _closable(self) -> list[tuple[LeadModel, str]]:
        """(lead, CRM) with a live record in that CRM and no verdict yet."""
        return [
            (lead, crm)
            for lead in self.leads
            for crm in CRMS
            if lead.live(crm) and lead.verdict is None and not lead.converted
        ]

    def _has_live(self, *systems: str) -> bool:
        return any(self._editable(lead, s) for lead in self.leads for s in systems)

    # -- rules: what people do in the systems --------------------------------------------

    @precondition(lambda self: len(self.leads) < self.max_leads)
    @rule(
        first=FIRST_NAMES,
        last=LAST_NAMES,
        company=st.none() | COMPANIES,
        city=st.none() | CITIES,
        phone=st.none() | PHONES,
        utm=st.none() | UTM_SOURCES,
    )
    def create_contact(
        self,
        first: str,
        last: str,
        company: str | None,
        city: str | None,
        phone: str | None,
        utm: str | None,
    ) -> None:
        """Marketing adds a contact in HubSpot (optional fields left blank at random)."""
        self._create(
            HUBSPOT,
            {
                "first_name": first,
                "last_name": last,
                "company": company,
                "city": city,
                "phone": phone,
                "utm_source": utm,
            },
        )

    @precondition(lambda self: len(self.leads) < self.max_leads)
    @rule(
        crm=st.sampled_from(CRMS),
        first=FIRST_NAMES,
        last=LAST_NAMES,
        company=COMPANIES,
        city=st.none() | CITIES,
        phone=st.none() | PHONES,
    )
    def create_in_crm(
        self, crm: str, first: str, last: str, company: str, city: str | None, phone: str | None
    ) -> None:
        """Sales adds a lead in Salesforce or Zoho (a walk-in): it reaches HubSpot, and from
        there the other CRM."""
        canonical = {"first_name": first, "last_name": last, "company": company}
        self._create(crm, {**canonical, "city": city, "phone": phone})

    def _create(self, system: str, canonical: dict[str, Any]) -> None:
        self.serial += 1
        lead = LeadModel(email=f"lead{self.serial}@{EMAIL_DOMAIN}", present={system})
        fields = {FIELDS[n][system]: v for n, v in canonical.items() if v is not None}
        email_field = "email" if system == HUBSPOT else "Email"
        [result] = self._connector(system).upsert(
            [UpsertInput(ref=lead.email, fields={email_field: lead.email, **fields})]
        )
        assert result.ok, result
        assert result.external_id is not None
        lead.ids[system] = str(result.external_id)
        lead.values[system] = canonical
        self.leads.append(lead)
        self._changed("contacts created" if system == HUBSPOT else "CRM leads created")

    @precondition(lambda self: self._has_live(HUBSPOT))
    @rule(data=st.data(), name=st.sampled_from(TWO_WAY + SOURCE_OWNED))
    def edit_in_hubspot(self, data: st.DataObject, name: str) -> None:
        """Marketing edits a mapped field of a contact."""
        lead, _ = self._pick(data, (HUBSPOT,))
        value = data.draw(VALUES[name], label=name)
        self.write(HUBSPOT, lead.ids[HUBSPOT], {FIELDS[name][HUBSPOT]: value})
        lead.edit(HUBSPOT, name, value, time.monotonic())
        self._changed("fields edited")

    @precondition(lambda self: self._has_live(SALESFORCE))
    @rule(data=st.data(), name=st.sampled_from(TWO_WAY))
    def edit_in_salesforce(self, data: st.DataObject, name: str) -> None:
        """Sales edits a two-way field of a Salesforce Lead."""
        self._edit_in_crm(data, SALESFORCE, name)

    @precondition(lambda self: self._has_live(ZOHO))
    @rule(data=st.data(), name=st.sampled_from(TWO_WAY))
    def edit_in_zoho(self, data: st.DataObject, name: str) -> None:
        """Sales edits a two-way field of a Zoho lead."""
        self._edit_in_crm(data, ZOHO, name)

    @precondition(lambda self: bool(self._linked()))
    @rule(data=st.data(), name=st.sampled_from(TWO_WAY))
    def edit_on_both_sides(self, data: st.DataObject, name: str) -> None:
        """Marketing and sales edit the same field of one lead before the next sync: a
        conflict (the values may happen to agree)."""
        lead, crm = data.draw(st.sampled_from(self._linked()), label="lead and CRM")
        order = data.draw(st.permutations([HUBSPOT, crm]), label="order")
        for system in order:
            value = data.draw(VALUES[name], label=f"{name} in {system}")
            self.write(system, lead.ids[system], {FIELDS[name][system]: value})
            lead.edit(system, name, value, time.monotonic())
            self._changed("fields edited")

    def _edit_in_crm(self, data: st.DataObject, crm: str, name: str) -> None:
        lead, _ = self._pick(data, (crm,))
        self.edit(lead, crm, name, data.draw(VALUES[name], label=name))

    def edit(self, lead: LeadModel, system: str, name: str, value: Any) -> None:
        """Set a mapped field of the lead's record on ``system``, in the sandbox and the model."""
        self.write(system, lead.ids[system], {FIELDS[name][system]: value})
        lead.edit(system, name, value, time.monotonic())
        self._changed("fields edited")

    @precondition(lambda self: bool(self._closable()))
    @rule(data=st.data(), reason=st.sampled_from(sorted(REASONS)))
    def sales_verdict(self, data: st.DataObject, reason: str) -> None:
        """Sales closes a lead as disqualified and says why (once per lead)."""
        lead, crm = data.draw(st.sampled_from(self._closable()), label="lead and CRM")
        status_field, statuses = CLOSING_STATUS[crm]
        status = data.draw(st.sampled_from(statuses), label="status")
        label = REASONS[reason][CRMS.index(crm)]
        reason_field = "Rejection_Reason__c" if crm == SALESFORCE else "Rejection_Reason"
        at = time.monotonic()
        self.write(crm, lead.ids[crm], {status_field: status, reason_field: label})
        lead.close(crm, reason, at)
        self._changed("verdicts")

    @precondition(
        lambda self: (
            self.deletes < self.max_deletes
            and any(
                self._editable(lead, s) and not lead.converted
                for lead in self.leads
                for s in SYSTEMS
            )
        )
    )
    @rule(data=st.data())
    def delete_record(self, data: st.DataObject) -> None:
        """Someone deletes a lead's record in one system (HubSpot: archives the contact); a
        converted lead is a customer in the making and is left alone."""
        choices = [
            (lead, s)
            for lead in self.leads
            for s in SYSTEMS
            if self._editable(lead, s) and not lead.converted
        ]
        lead, system = data.draw(st.sampled_from(choices), label="lead and system")
        [result] = self._connector(system).delete([lead.ids[system]])
        assert result.ok, f"{system} did not delete {lead.ids[system]}: {result.error}"
        lead.delete(system)
        self.deletes += 1
        self._changed("records deleted")

    def _mergeable(self) -> list[LeadModel]:
        """Leads with a known, live HubSpot contact and nothing the model leaves open (a
        verdict's stage would merge by HubSpot's rules, which the model does not follow)."""
        return [
            lead
            for lead in self.leads
            if lead.live(HUBSPOT)
            and HUBSPOT in lead.ids
            and lead.verdict is None
            and not lead.unmodelled
        ]

    @precondition(lambda self: self.merges < self.max_merges and len(self._mergeable()) >= 2)
    @rule(data=st.data())
    def merge_in_hubspot(self, data: st.DataObject) -> None:
        """Marketing merges two contacts in HubSpot: a new record where the primary's values
        win and values only the other had are kept (HubSpot's merge since 2025)."""
        primary, other = data.draw(st.permutations(self._mergeable()), label="merge")[:2]
        self.merge(primary, other)

    def merge(self, primary: LeadModel, other: LeadModel) -> None:
        """Merge ``other``'s HubSpot contact into ``primary``'s, in the sandbox and the model."""
        merged = hubspot_api(
            self.sandbox,
            "POST",
            "/crm/v3/objects/contacts/merge",
            {"primaryObjectId": primary.ids[HUBSPOT], "objectIdToMerge": other.ids[HUBSPOT]},
        )
        at = time.monotonic()
        mine = primary.values.setdefault(HUBSPOT, {})
        theirs = other.values.get(HUBSPOT, {})
        if len(other.ids) > 1 and len(primary.ids) == 1:
            # leadrelay links the merged contact to the lead of the synced one merged into it
            # (no new lead, no duplicate in the CRMs): the primary's lead takes over the other's
            # CRM records, which get the merged contact's e-mail and values.
            other.take_over_by(primary)
            values = {**theirs, **{n: v for n, v in mine.items() if v is not None}}
        else:
            values = {n: v for n, v in theirs.items() if mine.get(n) is None}
        for name, value in values.items():
            if value is not None and name not in VERDICT_FIELDS:
                primary.edit(HUBSPOT, name, value, at)
        primary.ids[HUBSPOT] = str(merged["id"])
        other.merged_away(primary)
        self.merges += 1
        self._changed("contacts merged")

    def _zoho_mergeable(self) -> list[LeadModel]:
        return [
            lead
            for lead in self.leads
            if lead.live(ZOHO) and ZOHO in lead.ids and lead.verdict is None and not lead.unmodelled
        ]

    @precondition(lambda self: self.merges < self.max_merges and len(self._zoho_mergeable()) >= 2)
    @rule(data=st.data(), taken=st.sets(st.sampled_from(TWO_WAY), max_size=3))
    def merge_in_zoho(self, data: st.DataObject, taken: set[str]) -> None:
        """Sales merges a duplicate lead into a master lead in Zoho, taking the duplicate's
        values of some fields. Zoho deletes the duplicate and names no survivor, so leadrelay
        sees a deletion: the duplicate's other records live on (keep) or go (propagate)."""
        master, duplicate = data.draw(st.permutations(self._zoho_mergeable()), label="merge")[:2]
        self.merge_zoho(master, duplicate, taken)

    def merge_zoho(self, master: LeadModel, duplicate: LeadModel, taken: set[str]) -> None:
        """Merge ``duplicate``'s Zoho lead into ``master``'s, taking the fields ``taken``."""
        theirs = duplicate.values.get(ZOHO, {})
        # (a blank taken from the duplicate would clear the master's value: not modelled)
        taken = {name for name in taken if theirs.get(name) is not None}
        fields = [{"api_name": FIELDS[name][ZOHO]} for name in sorted(taken)]
        body = {"merge": [{"data": [{"id": duplicate.ids[ZOHO], "_fields": fields}]}]}
        connector: Any = self._connector(ZOHO)
        response = connector._call(
            "POST", f"/Leads/{master.ids[ZOHO]}/actions/merge", describe="merge", json=body
        )
        assert response.status_code == 200, response.text
        at = time.monotonic()
        for name in sorted(taken):
            master.edit(ZOHO, name, theirs.get(name), at)
        duplicate.delete(ZOHO)
        self.merges += 1
        self._changed("zoho merges")

    def _convertible(self) -> list[LeadModel]:
        """Synced leads with a live Salesforce Lead, no verdict, nothing left open, and no
        Salesforce edit still to carry (the conversion would freeze it)."""
        return [
            lead
            for lead in self.leads
            if self._editable(lead, SALESFORCE)
            and len(lead.ids) > 1
            and lead.verdict is None
            and not lead.unmodelled
            and not any(SALESFORCE in edits for edits in lead.pending.values())
        ]

    @precondition(lambda self: self.conversions < self.max_conversions and self._convertible())
    @rule(data=st.data(), won=st.booleans())
    def convert_in_salesforce(self, data: st.DataObject, won: bool) -> None:
        """Sales converts a Lead into an Opportunity (open, or already won), as an admin does
        in Salesforce's UI."""
        lead = data.draw(st.sampled_from(self._convertible()), label="lead")
        self.convert(lead, won=won)

    def convert(self, lead: LeadModel, *, won: bool) -> None:
        """Convert the lead's Salesforce Lead, in the sandbox and the model."""
        opportunity = {
            "Name": f"Deal {lead.email}",
            "StageName": "Closed Won" if won else "Prospecting",
            "Amount": 5000,
            "CloseDate": "2027-03-31",
        }
        made = self._admin(
            "salesforce/convert", {"lead_id": lead.ids[SALESFORCE], "opportunity": opportunity}
        )
        lead.convert("won" if won else "opportunity")
        lead.contact_id = str(made["contact_id"])
        self.conversions += 1
        self._changed("conversions")

    def _contact_editable(self) -> list[LeadModel]:
        """Converted leads whose Contact sales may edit (the Lead itself is frozen)."""
        return [
            lead
            for lead in self.leads
            if lead.converted
            and lead.contact_id is not None
            and lead.live(SALESFORCE)
            and lead.merged_into is None
        ]

    @precondition(lambda self: bool(self._contact_editable()))
    @rule(data=st.data(), name=st.sampled_from(tuple(CONTACT_FIELDS)))
    def edit_converted_contact(self, data: st.DataObject, name: str) -> None:
        """Sales edits the person on the Contact a conversion made (the Lead takes no edits):
        the change reaches marketing, and through it the other CRM, as the Lead's."""
        lead = data.draw(st.sampled_from(self._contact_editable()), label="lead")
        self.edit_contact(lead, name, data.draw(VALUES[name], label=name))

    def edit_contact(self, lead: LeadModel, name: str, value: Any) -> None:
        """Set a field of the converted lead's Contact, in the sandbox and the model."""
        assert lead.contact_id is not None
        self._connector(SALESFORCE).restful(
            f"sobjects/Contact/{lead.contact_id}",
            method="PATCH",
            json={CONTACT_FIELDS[name]: value},
            describe="update a Contact",
            idempotent=True,
        )
        lead.edit(SALESFORCE, name, value, time.monotonic())
        self._changed("contacts edited")

    # A sync with nothing new to carry checks little; the rerun of every quiet sync covers it.
    @precondition(lambda self: self.changes > 0)
    @rule()
    def sync(self) -> None:
        """``leadrelay sync``; then the model's invariants hold and a rerun writes nothing."""
        self._quiet_sync()

    @precondition(lambda self: self.changes > 0)
    @rule(calls=st.integers(0, 40))
    def killed_sync(self, calls: int) -> None:
        """A sync dies after ``calls`` API calls; the next one, clean, ends where a quiet sync
        would have."""
        TOTALS["killed syncs"] += 1
        with killed_after(calls), contextlib.suppress(Killed):
            self.run_sync()
        for lead in self.leads:
            lead.interrupted()
        self._quiet_sync()

    # -- the checks ----------------------------------------------------------------------

    def _quiet_sync(self) -> None:
        self.changes = 0
        code, report = self.run_sync()
        assert code == 0, report
        for flow in report["flows"]:
            assert flow["dead_lettered"] == 0, flow
        for lead in self.leads:
            if self.on_delete == "propagate":
                lead.propagate()
            lead.settle()
        self._check()
        code, again = self.run_sync()
        assert code == 0, again
        for flow in again["flows"]:
            wrote = (flow["created"], flow["updated"], flow["written_back"], flow["dead_lettered"])
            assert wrote == (0, 0, 0, 0), f"a second sync wrote: {flow}"
        TOTALS["checked syncs"] += 1

    def records(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Every record of every system, by email (HubSpot by lookup: emails are unique there,
        and its search API is rate-limited per second)."""
        emails = [lead.email for lead in self.leads]
        found: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in SYSTEMS}
        for email, raw in self._connector(HUBSPOT).lookup(emails=emails).items():
            found[HUBSPOT].setdefault(email.lower(), []).append(raw)
        for crm in CRMS:
            for page in self._connector(crm).read_changes(None):
                for raw in page.records:
                    email = str(raw.get("Email") or "").lower()
                    found[crm].setdefault(email, []).append(raw)
        return found

    def canonical(self, system: str, raw: dict[str, Any]) -> dict[str, Any]:
        lead, problems = build_lead(self.mappings[system].to_lead(raw))
        assert lead is not None, f"{system} record {raw.get(ID_KEY[system])} maps badly: {problems}"
        names = (*FIELDS, "stage", "rejection_reason")
        return {name: canonical_value(getattr(lead, name)) for name in names}

    def _check(self) -> None:
        records = self.records()
        for lead in self.leads:
            actual: dict[str, dict[str, Any]] = {}
            for system in SYSTEMS:
                held = records[system].get(lead.email, [])
                if system == HUBSPOT and lead.merged_into is not None:
                    # Its e-mail is an additional one of the merged contact: it finds that.
                    into = next(m for m in self.leads if m.email == lead.merged_into)
                    found = {str(raw[ID_KEY[HUBSPOT]]) for raw in held}
                    expected = {into.ids[HUBSPOT]} if into.live(HUBSPOT) else set()
                    assert found <= expected, f"{lead.email}: HubSpot holds {found}, merged"
                    continue
                if not lead.live(system):
                    why = "it was deleted there" if system in lead.gone else "it never got there"
                    assert not held, f"{lead.email}: {system} holds {len(held)} record(s), {why}"
                    continue
                held_ids = [raw.get(ID_KEY[system]) for raw in held]
                assert len(held) == 1, f"{lead.email}: {system} holds records {held_ids}"
                [raw] = held
                record_id = str(raw[ID_KEY[system]])
                known = lead.ids.setdefault(system, record_id)
                assert known == record_id, f"{lead.email}: {system} record {known} replaced"
                actual[system] = self.canonical(system, raw)
            for group in lead.groups():
                for name in {n for s in group for n in lead.values.get(s, {})}:
                    self._check_field(lead, group, name, actual)

    def _check_field(
        self, lead: LeadModel, group: set[str], name: str, actual: dict[str, dict[str, Any]]
    ) -> None:
        holders = sorted(s for s in group if name in lead.values.get(s, {}))
        seen = {s: actual[s][name] for s in holders}
        for system in holders:
            expected = lead.values[system][name]
            if isinstance(expected, Either):
                assert len(set(seen.values())) == 1, f"{lead.email}.{name} differs: {seen}"
                assert seen[system] in expected.values, (
                    f"{lead.email}.{name}: {seen[system]!r} was none of {set(expected.values)}"
                )
                lead.values[system][name] = seen[system]
            else:
                assert seen[system] == expected, (
                    f"{lead.email}.{name} on {system}: {seen[system]!r}, model says "
                    f"{expected!r} (all: {seen})"
                )


class PropagatingSyncMachine(TwoWaySyncMachine):
    """The same stories with ``on_delete = "propagate"`` on both flows."""

    on_delete: ClassVar[str] = "propagate"
