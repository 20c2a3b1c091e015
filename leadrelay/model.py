"""The canonical Lead and its enums (DESIGN §4).

Every system maps to this model and never to another system. Normalization happens here, once:
a value is either repaired by a named rule or rejected with the field and the reason
(:class:`pydantic.ValidationError` names the field; the message names the rule that failed).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from leadrelay.taxonomy import standard_list
from leadrelay.taxonomy.geo import country_code, region_code


class Channel(StrEnum):
    """Marketing channel of a touch (GA4-style default channel grouping, DESIGN §4)."""

    PAID_SEARCH = "paid_search"
    PAID_SOCIAL = "paid_social"
    ORGANIC_SEARCH = "organic_search"
    ORGANIC_SOCIAL = "organic_social"
    EMAIL = "email"
    REFERRAL = "referral"
    DISPLAY = "display"
    AFFILIATE = "affiliate"
    DIRECT = "direct"
    OFFLINE = "offline"
    OTHER = "other"


class Stage(StrEnum):
    """Lifecycle stage of a lead, in funnel order (see :data:`STAGE_ORDER`)."""

    LEAD = "lead"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    WON = "won"
    LOST = "lost"
    RECYCLED = "recycled"
    DISQUALIFIED = "disqualified"


#: Funnel position of each stage; the terminal side-exits (lost, recycled, disqualified) rank
#: by when they can happen, so "moves forward" comparisons stay meaningful for filters.
STAGE_ORDER: dict[Stage, int] = {
    Stage.LEAD: 0,
    Stage.RECYCLED: 0,
    Stage.MQL: 1,
    Stage.SAL: 2,
    Stage.DISQUALIFIED: 2,
    Stage.SQL: 3,
    Stage.OPPORTUNITY: 4,
    Stage.LOST: 5,
    Stage.WON: 5,
}


class RejectionReason(StrEnum):
    """Why sales rejected or closed a lead without converting it."""

    BAD_FIT = "bad_fit"
    WRONG_ROLE = "wrong_role"
    NO_NEED = "no_need"
    TIMING = "timing"
    NO_RESPONSE = "no_response"
    COMPETITOR = "competitor"
    INVALID_CONTACT = "invalid_contact"
    DUPLICATE = "duplicate"
    EXISTING_CUSTOMER = "existing_customer"
    OTHER = "other"


class OutcomeReason(StrEnum):
    """Why an opportunity was won or lost: one closed set, with a value map per CRM (like
    :class:`RejectionReason`). :data:`WON_REASONS` and :data:`LOST_REASONS` say which fit which."""

    PRICE = "price"
    PRODUCT_FIT = "product_fit"
    RELATIONSHIP = "relationship"
    COMPETITOR = "competitor"
    NO_BUDGET = "no_budget"
    NO_DECISION = "no_decision"
    TIMING = "timing"
    PRODUCT_GAP = "product_gap"
    OTHER = "other"


#: Reasons a deal is won for, and lost for (``price`` and ``other`` are both).
WON_REASONS: frozenset[OutcomeReason] = frozenset(
    {
        OutcomeReason.PRICE,
        OutcomeReason.PRODUCT_FIT,
        OutcomeReason.RELATIONSHIP,
        OutcomeReason.OTHER,
    }
)
LOST_REASONS: frozenset[OutcomeReason] = frozenset(
    {
        OutcomeReason.PRICE,
        OutcomeReason.COMPETITOR,
        OutcomeReason.NO_BUDGET,
        OutcomeReason.NO_DECISION,
        OutcomeReason.TIMING,
        OutcomeReason.PRODUCT_GAP,
        OutcomeReason.OTHER,
    }
)


class Tier(StrEnum):
    """Urgency tier set by scoring (hot: demo or pricing request within 24 h)."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class Industry(StrEnum):
    """Canonical industry (DESIGN §4): NAICS 2022 sectors, technology, finance and life sciences
    split finer. Labels and every built-in system's values: ``leadrelay/taxonomy/industry.toml``.
    """

    AGRICULTURE = "agriculture"
    ENERGY_MINING = "energy_mining"
    UTILITIES = "utilities"
    CONSTRUCTION = "construction"
    MANUFACTURING = "manufacturing"
    CHEMICALS = "chemicals"
    ELECTRONICS = "electronics"
    AUTOMOTIVE = "automotive"
    AEROSPACE_DEFENSE = "aerospace_defense"
    CONSUMER_GOODS = "consumer_goods"
    FOOD_BEVERAGE = "food_beverage"
    WHOLESALE = "wholesale"
    RETAIL = "retail"
    TRANSPORTATION_LOGISTICS = "transportation_logistics"
    HOSPITALITY = "hospitality"
    MEDIA_ENTERTAINMENT = "media_entertainment"
    TELECOMMUNICATIONS = "telecommunications"
    SOFTWARE = "software"
    IT_SERVICES = "it_services"
    FINANCIAL_SERVICES = "financial_services"
    BANKING = "banking"
    INSURANCE = "insurance"
    REAL_ESTATE = "real_estate"
    PROFESSIONAL_SERVICES = "professional_services"
    BUSINESS_SERVICES = "business_services"
    EDUCATION = "education"
    HEALTHCARE = "healthcare"
    LIFE_SCIENCES = "life_sciences"
    GOVERNMENT = "government"
    NONPROFIT = "nonprofit"
    OTHER = "other"


class Salutation(StrEnum):
    """Canonical salutation; each system's values: ``leadrelay/taxonomy/salutation.toml``."""

    MR = "mr"
    MS = "ms"
    MRS = "mrs"
    MX = "mx"
    DR = "dr"
    PROF = "prof"


class EmployeeRange(StrEnum):
    """Canonical company-size range (LinkedIn's company sizes). A Lead holds a head count
    (``employees``); :meth:`of` gives its range. A system's own range labels (HubSpot's
    ``numemployees``) are read as their lower bound by the ``employee_range`` transform."""

    SOLO = "1"
    R2_10 = "2-10"
    R11_50 = "11-50"
    R51_200 = "51-200"
    R201_500 = "201-500"
    R501_1000 = "501-1000"
    R1001_5000 = "1001-5000"
    R5001_10000 = "5001-10000"
    R10001_PLUS = "10001+"

    @property
    def low(self) -> int:
        """The smallest head count in the range."""
        return int(self.value.split("-")[0].rstrip("+"))

    @classmethod
    def of(cls, count: int) -> EmployeeRange:
        """The range holding a head count (0 counts as a one-person company)."""
        chosen = cls.SOLO
        for member in cls:
            if member.low <= count:
                chosen = member
        return chosen


#: Consumer mailbox providers: their domain says nothing about the lead's company.
FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "yahoo.de",
        "ymail.com",
        "rocketmail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "hotmail.de",
        "outlook.com",
        "outlook.de",
        "live.com",
        "live.co.uk",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "pm.me",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "t-online.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "zohomail.com",
        "qq.com",
        "163.com",
        "126.com",
        "naver.com",
        "hey.com",
        "fastmail.com",
        "tutanota.com",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "libero.it",
        "seznam.cz",
        "wp.pl",
        "bol.com.br",
        "uol.com.br",
        "rediffmail.com",
    }
)

#: Local parts that name a function, not a person (info@, sales@ …).
ROLE_LOCAL_PARTS: frozenset[str] = frozenset(
    {
        "info",
        "sales",
        "contact",
        "hello",
        "admin",
        "support",
        "office",
        "marketing",
        "team",
        "enquiries",
        "inquiries",
        "help",
        "billing",
        "hr",
        "jobs",
        "careers",
        "noreply",
        "no-reply",
        "webmaster",
        "postmaster",
        "mail",
        "service",
    }
)


#: :func:`~leadrelay.taxonomy.geo.country_code`, remembered: a lead list names few countries,
#: each in a few spellings, and folding the text is most of a lookup's cost.
_country_code = lru_cache(maxsize=4096)(country_code)


def normalize_country(value: str) -> str:
    """The ISO 3166-1 alpha-2 code of a country code or name (``pycountry``'s names and the
    everyday ones of :data:`~leadrelay.taxonomy.geo.COUNTRY_ALIASES`); other text kept as given."""
    text = " ".join(value.split())
    return _country_code(text) or text


#: A plain ASCII address (lower case): a dot-atom local part of at most 64 characters, and a
#: domain of LDH labels with no ``--`` (so no Punycode) under an all-letter top-level domain.
#: Such an address is valid as it stands; anything else goes through email-validator.
_PLAIN_EMAIL = re.compile(
    r"(?=[^@]{1,64}@)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:(?!-)(?:[a-z0-9]|-(?!-)){1,63}(?<!-)\.)+[a-z]{2,63}"
)


def plain_email(text: str) -> str | None:
    """The normalized form of ``text`` when it is a plain, well-formed ASCII address that
    email-validator accepts unchanged (see :data:`_PLAIN_EMAIL`); None when it takes the full
    validator to say (Unicode, quoting, IDNA, a special-use domain, a length limit)."""
    if not text.isascii() or len(text) > 254:
        return None
    lowered = text.lower()
    if not _PLAIN_EMAIL.fullmatch(lowered):
        return None
    tld = lowered.rpartition(".")[2]
    if tld in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        return None
    return lowered


def _email_text(value: str) -> str:
    """The address in an email value: trimmed, without angle brackets or ``mailto:``."""
    text = value.strip().strip("<>").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text


def normalize_email(value: str) -> str:
    """Trim, lower-case, IDNA-encode the domain and check the syntax (no DNS).

    A plain ASCII address is checked by :func:`plain_email` alone; the rest by email-validator.
    Raises ValueError naming the reason when the address cannot be repaired.
    """
    text = _email_text(value)
    if not text:
        raise ValueError("email is empty")
    plain = plain_email(text)
    if plain is not None:
        return plain
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return f"{result.local_part.lower()}@{result.ascii_domain.lower()}"


#: A North American Numbering Plan number as people type it: ``+1`` (or, in a NANP default
#: region, ``1`` or nothing), then a ten-digit national number whose area code and first digit
#: are 2-9, in groups of 3, 3 and 4 digits separated by at most one space, dot or dash, the
#: area code perhaps in parentheses. phonenumbers reads every such text as country code 1 and
#: those ten digits: nothing in it is a national prefix (the first digit is not 1), a carrier
#: code, an extension or a letter, and ten digits is the NANP's one possible national length.
_NANP_PHONE = re.compile(
    r"(\+1|1)?[ .-]?(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[ .-]?([0-9]{3})[ .-]?([0-9]{4})"
)

#: Default regions in which a ten-digit NANP number needs no ``+1``: national prefix ``1``,
#: national numbers of ten digits (checked against phonenumbers in tests/test_model.py).
_NANP_REGIONS = frozenset({"US", "CA"})


def plain_phone(text: str, region: str | None) -> str | None:
    """The E.164 form of ``text`` when it is a plain NANP number (:data:`_NANP_PHONE`):
    ``+1`` and its ten digits, as phonenumbers would give them; None when it takes
    phonenumbers to say. ``region`` is the default region (ISO alpha-2) or None."""
    match = _NANP_PHONE.fullmatch(text)
    if match is None:
        return None
    if match[1] != "+1" and region not in _NANP_REGIONS:
        return None
    return "+1" + (match[2] or match[3]) + match[4] + match[5]


def _phone_region(country: str | None) -> str | None:
    """The default region of a lead's country (a code or a name), or None."""
    region = normalize_country(country) if country else None
    if region is not None and (len(region) != 2 or not region.isalpha()):
        return None
    return region


def parse_phone(text: str, region: str | None, *, given: str | None = None) -> str:
    """phonenumbers' E.164 form of ``text`` (``00`` read as ``+``) in default ``region``.

    Raises ValueError when the number cannot be parsed or is not a possible number, naming
    ``given`` (default ``text``).
    """
    shown = text if given is None else given
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region or text.startswith("+") else " (no country to resolve a local number)"
        raise ValueError(f"phone {shown!r} cannot be parsed: {exc}{hint}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"phone {shown!r} is not a possible number for its country")
    formatted: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return formatted


def normalize_phone(value: str, country: str | None = None) -> str:
    """Parse a phone number to E.164, using the lead's country as the default region.

    A plain NANP number is read by :func:`plain_phone`; the rest by phonenumbers.
    Raises ValueError when the number cannot be parsed or is not a possible number.
    """
    text = value.strip()
    if not text:
        raise ValueError("phone is empty")
    plain = _plain_phone_of(text, country)
    if plain is not None:
        return plain
    return parse_phone(text, _phone_region(country), given=value)


def _plain_phone_of(text: str, country: str | None) -> str | None:
    """:func:`plain_phone` of trimmed ``text`` with the lead's country as the default region."""
    if text.startswith("+1"):
        # The default region plays no part in a number with its country code.
        plain = plain_phone(text, None)
        if plain is not None:
            return plain
    return plain_phone(text, _phone_region(country))


def domain_from_website(value: str) -> str | None:
    """The registrable host of a website value (``https://www.Acme.io/x`` -> ``acme.io``)."""
    text = value.strip()
    if not text:
        return None
    if "//" not in text:
        text = "//" + text
    host = (urlsplit(text).hostname or "").strip(".").lower()
    if not host or "." not in host:
        return None
    if host.startswith("www."):
        host = host[4:]
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def company_domain_from_email(email: str) -> str | None:
    """The email's domain when it is a work address; None for free-mail providers."""
    domain = email.rpartition("@")[2]
    if not domain or domain in FREE_MAIL_DOMAINS:
        return None
    return domain


def _derived_domain(email: str | None, website: str | None) -> str | None:
    """A Lead's company domain when none is given: a work email's, or else the website's."""
    domain = company_domain_from_email(email) if email else None
    if domain is None and website:
        domain = domain_from_website(website)
    return domain


def new_lead_key() -> str:
    """A fresh leadrelay lead key (``ld_`` + 26 random hex characters, 104 bits)."""
    return "ld_" + secrets.token_hex(13)


def _clean_text(value: object) -> object:
    if isinstance(value, str):
        text = " ".join(value.split())
        return text or None
    return value


#: Lead fields holding a standard list's canonical value.
_STANDARD_FIELDS: tuple[str, ...] = ("industry", "salutation", "country")


def _standard_value(name: str, value: str) -> str | None:
    """The canonical value of a standard-list field's text, or None when nothing covers it."""
    if name == "country":
        return _country_code(value)
    return standard_list(name).canonical(value)


class Owner(BaseModel):
    """A CRM user or queue that owns a lead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    email: str | None = None
    name: str | None = None


class Touch(BaseModel):
    """One marketing touch: where a visit came from. The first one is kept on the Lead."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    click_ids: dict[str, str] = Field(default_factory=dict)
    landing_page: str | None = None
    referrer: str | None = None
    at: datetime | None = None


class ScoreBreakdown(BaseModel):
    """Points per scoring category (DESIGN §12: fit 40 %, intent 40 %, engagement 20 %)."""

    model_config = ConfigDict(extra="forbid")

    fit: float = 0.0
    intent: float = 0.0
    engagement: float = 0.0


_TEXT_FIELDS = (
    "first_name",
    "last_name",
    "job_title",
    "company",
    "city",
    "postal_code",
    "queue",
    "consent_text",
    "qualification_reason",
    "opportunity_id",
    "opportunity_stage",
)
#: Attribution texts and the website: trimmed only (a URL or a tag keeps its inner spaces).
_ATTRIBUTION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "landing_page",
    "referrer",
    "website",
)


class Lead(BaseModel):
    """The canonical lead every connector, form and rule speaks (DESIGN §4)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)

    # identity
    key: str = Field(default_factory=new_lead_key)
    external_ids: dict[str, str] = Field(default_factory=dict)
    email: str | None = None
    # country comes before phone: the phone validator reads it as the default region
    country: str | None = None
    phone: str | None = None
    salutation: Salutation | None = None
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    # company
    company: str | None = None
    company_domain: str | None = None
    website: str | None = None
    industry: Industry | None = None
    employees: int | None = Field(default=None, ge=0)
    annual_revenue: float | None = Field(default=None, ge=0)
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    # attribution
    channel: Channel | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    click_ids: dict[str, str] = Field(default_factory=dict)
    landing_page: str | None = None
    referrer: str | None = None
    form_id: str | None = None
    ad_account: str | None = None
    campaign_id: str | None = None
    ad_id: str | None = None
    first_touch: Touch | None = None
    # qualification
    score: float | None = None
    score_breakdown: ScoreBreakdown | None = None
    qualification_reason: str | None = None
    intent_signals: list[str] = Field(default_factory=list)
    tier: Tier | None = None
    # lifecycle
    stage: Stage = Stage.LEAD
    rejection_reason: RejectionReason | None = None
    # outcome: the opportunity / deal a converted lead became (sales owns these)
    opportunity_id: str | None = None
    opportunity_stage: str | None = None
    amount: float | None = Field(default=None, ge=0)
    currency: str | None = None
    closed_at: datetime | None = None
    outcome_reason: OutcomeReason | None = None
    # ownership & SLA
    owner: Owner | None = None
    queue: str | None = None
    assigned_at: datetime | None = None
    first_action_at: datetime | None = None
    accepted_at: datetime | None = None
    sla_due_at: datetime | None = None
    # consent
    email_opt_in: bool | None = None
    consent_text: str | None = None
    consent_at: datetime | None = None
    # bookkeeping
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: dict[str, datetime] = Field(default_factory=dict)
    is_test: bool = False
    custom: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _keep_unread_values(cls, data: Any) -> Any:
        """A standard-list value that reads as no canonical value (an industry, salutation or
        country no map covers) is kept verbatim in ``custom["<field>_raw"]``, never dropped."""
        if not isinstance(data, dict):
            return data
        moved: dict[str, str] = {}
        for name in _STANDARD_FIELDS:
            value = data.get(name)
            if isinstance(value, str) and value.strip() and _standard_value(name, value) is None:
                moved[name] = " ".join(value.split())
        if not moved:
            return data
        custom = dict(data.get("custom") or {})
        for name, value in moved.items():
            custom.setdefault(f"{name}_raw", value)
        return {**{k: v for k, v in data.items() if k not in moved}, "custom": custom}

    @field_validator("industry", "salutation", mode="before")
    @classmethod
    def _standard(cls, value: object, info: ValidationInfo) -> object:
        """A system's value, label or common spelling becomes the canonical value."""
        if not isinstance(value, str) or isinstance(value, StrEnum):
            return value
        if not value.strip():
            return None
        name = str(info.field_name)
        found = _standard_value(name, value)
        if found is None:
            nearest = ", ".join(standard_list(name).nearest(value))
            raise ValueError(f"{value!r} is not a canonical {name} (nearest: {nearest})")
        return found

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object, info: ValidationInfo) -> object:
        """An ISO 3166-2 code when the lead's country has the region (``California`` in the
        US → ``US-CA``); other text trimmed and kept (systems that hold names)."""
        cleaned = _clean_text(value)
        if not isinstance(cleaned, str):
            return cleaned
        return region_code(info.data.get("country"), cleaned) or cleaned

    @field_validator(*_TEXT_FIELDS, mode="before")
    @classmethod
    def _trim_text(cls, value: object) -> object:
        """Names and other free text: whitespace trimmed and folded, Unicode kept."""
        return _clean_text(value)

    @field_validator(*_ATTRIBUTION_FIELDS, mode="before")
    @classmethod
    def _trim_attribution(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: object) -> object:
        if isinstance(value, str):
            return normalize_email(value) if value.strip() else None
        return value

    @field_validator("country", mode="before")
    @classmethod
    def _country(cls, value: object) -> object:
        if isinstance(value, str):
            return normalize_country(value) if value.strip() else None
        return value

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: object) -> object:
        """An ISO 4217 code, upper case (``eur`` → ``EUR``)."""
        if not isinstance(value, str):
            return value
        code = value.strip().upper()
        if not code:
            return None
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError(f"not an ISO 4217 currency code: {value!r}")
        return code

    @field_validator("company_domain", mode="before")
    @classmethod
    def _company_domain(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            domain = domain_from_website(value)
            if domain is None:
                raise ValueError(f"not a domain: {value!r}")
            return domain
        return value

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            return normalize_phone(value, info.data.get("country"))
        return value

    @model_validator(mode="after")
    def _derive(self) -> Lead:
        """Company domain from a work email or, failing that, the website."""
        # An assignment here would re-enter validation (validate_assignment): write __dict__.
        if self.company_domain is None:
            domain = _derived_domain(self.email, self.website)
            if domain is not None:
                self.__dict__["company_domain"] = domain
        return self

    @property
    def full_name(self) -> str | None:
        """First and last name joined, or None when both are missing."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) or None

    def touch(self) -> Touch:
        """The attribution currently on the lead, as a Touch."""
        return Touch(
            channel=self.channel,
            utm_source=self.utm_source,
            utm_medium=self.utm_medium,
            utm_campaign=self.utm_campaign,
            utm_term=self.utm_term,
            utm_content=self.utm_content,
            click_ids=dict(self.click_ids),
            landing_page=self.landing_page,
            referrer=self.referrer,
        )


# --------------------------------------------------------------------------- row fast path

_ATTRIBUTION_FIELD_SET = frozenset(_ATTRIBUTION_FIELDS)
_TEXT_FIELD_SET = frozenset(_TEXT_FIELDS)


#: Fields whose value the Lead keeps as it is when it has one of these exact types (no
#: validator of theirs changes such a value; pydantic keeps a model instance or a datetime
#: as the same object).
_KEPT_EXTRA_TYPES: dict[str, frozenset[type]] = {
    "key": frozenset({str}),
    "created_at": frozenset({datetime}),
    "is_test": frozenset({bool}),
    "form_id": frozenset({str, type(None)}),
    "ad_id": frozenset({str, type(None)}),
    "campaign_id": frozenset({str, type(None)}),
    "ad_account": frozenset({str, type(None)}),
    "channel": frozenset({Channel, type(None)}),
    "first_touch": frozenset({Touch, type(None)}),
    "owner": frozenset({Owner, type(None)}),
}
_STR = frozenset({str})
#: Row fields whose validators keep a None (an empty form field the mapping read as blank).
_NONE_AS_IS = frozenset({*_TEXT_FIELD_SET, *_ATTRIBUTION_FIELD_SET, "email", "country", "phone"})


def _extra_value(name: str, value: Any) -> tuple[bool, Any]:
    """``(True, what the Lead's validation makes of value)`` for an ``extra`` value of
    :func:`fast_lead` that needs no validator to decide; ``(False, None)`` otherwise."""
    kept = _KEPT_EXTRA_TYPES.get(name)
    if kept is not None:
        if type(value) in kept:
            return True, value
        if name == "owner" and type(value) is dict:
            try:
                return True, Owner.model_validate(value)
            except ValidationError:
                return False, None
        return False, None
    if name in _ATTRIBUTION_FIELD_SET:
        if value is None:
            return True, None
        return (True, value.strip() or None) if type(value) is str else (False, None)
    if name in _TEXT_FIELD_SET:
        if value is None:
            return True, None
        return (True, " ".join(value.split()) or None) if type(value) is str else (False, None)
    if (
        name == "click_ids"
        and type(value) is dict
        and _STR.issuperset(map(type, value))
        and _STR.issuperset(map(type, value.values()))
    ):
        return True, dict(value)
    return False, None


def fast_lead(row: Mapping[str, str], extra: Mapping[str, Any] | None = None) -> Lead | None:
    """The Lead that ``Lead.model_validate({**row, **extra})`` gives, built without pydantic
    validation; None when a value takes a validator to decide, and the caller must validate
    instead.

    Covered: text values (or None) of the email, phone and country, the free-text fields and
    the attribution texts. Each value goes through the validator's own cheap steps (trimming,
    :func:`plain_email`, the NANP :func:`plain_phone`, the cached country lookup); a value any
    of them cannot settle (a Unicode or quoted address, a number only phonenumbers reads, a
    country no list covers, another field, a value that is not ``str``) defers the whole row.

    ``extra`` holds values already of the Lead's own types, over the row's (what a capture
    adds to a form's values: the key, the receipt time, the tagged attribution and first
    touch, the form and ad ids, an owner): kept as they are, texts trimmed as their validators
    trim them. Another field or type there defers too.
    ``tests/test_model.py`` holds it equal to ``Lead.model_validate`` on generated rows.
    """
    values: dict[str, Any] = {}
    if extra:
        row = {name: value for name, value in row.items() if name not in extra}
    for name, value in row.items():
        if type(value) is not str:
            if value is None and name in _NONE_AS_IS:
                values[name] = None
                continue
            return None
        if name in _TEXT_FIELD_SET:
            values[name] = " ".join(value.split()) or None
        elif name in _ATTRIBUTION_FIELD_SET:
            values[name] = value.strip() or None
        elif name == "email":
            if not value.strip():
                values[name] = None
                continue
            email = plain_email(_email_text(value))
            if email is None:
                return None
            values[name] = email
        elif name == "country":
            if not value.strip():
                values[name] = None
                continue
            # The unread-value check looks the raw text up, the field the folded one: the
            # two agree when the text is already folded.
            if value != " ".join(value.split()):
                return None
            code = _country_code(value)
            if code is None:
                return None
            values[name] = code
        elif name != "phone":
            return None
    phone = row.get("phone")
    if phone is not None:
        text = phone.strip()
        if text:
            plain = _plain_phone_of(text, values.get("country"))
            if plain is None:
                return None
            values["phone"] = plain
        else:
            values["phone"] = None
    if extra:
        kept_types = _KEPT_EXTRA_TYPES
        for name, value in extra.items():
            kept = kept_types.get(name)
            if kept is not None and type(value) in kept:
                values[name] = value  # the most common case, without a call
                continue
            settled, values[name] = _extra_value(name, value)
            if not settled:
                return None
    fields_set = set(values)
    domain = _derived_domain(values.get("email"), values.get("website"))
    if domain is not None:
        values["company_domain"] = domain
    if extra:
        # a capture gives the key and the receipt time: no random key or clock read for them
        missing = tuple(item for item in _LEAD_FACTORIES if item[0] not in extra)
        return _construct_lead(fields_set, values, missing)
    return _construct_lead(fields_set, values)


#: The Lead's fields in order with their plain defaults (a default factory's field holds None
#: here and is filled per Lead); ``Lead.model_construct`` looks each default up per call,
#: inspecting every factory's signature, which costs more than validating the row.
_LEAD_DEFAULTS: dict[str, Any] = {
    name: None if field.default_factory is not None else field.default
    for name, field in Lead.model_fields.items()
}
_LEAD_FACTORIES: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name, cast("Callable[[], Any]", field.default_factory))
    for name, field in Lead.model_fields.items()
    if field.default_factory is not None
)


def _construct_lead(
    fields_set: set[str],
    values: dict[str, Any],
    factories: tuple[tuple[str, Callable[[], Any]], ...] | None = None,
) -> Lead:
    """What ``Lead.model_construct(fields_set, **values)`` builds (``values`` already valid);
    ``factories``: the default factories to call (default all; those of fields in ``values``
    may be left out)."""
    if factories is None:
        factories = _LEAD_FACTORIES
    data = dict(_LEAD_DEFAULTS)
    for name, factory in factories:
        data[name] = factory()
    data.update(values)
    lead = Lead.__new__(Lead)
    object.__setattr__(lead, "__dict__", data)
    object.__setattr__(lead, "__pydantic_fields_set__", fields_set)
    object.__setattr__(lead, "__pydantic_extra__", None)
    object.__setattr__(lead, "__pydantic_private__", None)
    return lead


def lead_from_row(row: Mapping[str, str]) -> Lead:
    """The canonical Lead of a row of text values: :func:`fast_lead` when it can, else
    ``Lead.model_validate`` (which raises :class:`pydantic.ValidationError` for a bad value)."""
    lead = fast_lead(row)
    return lead if lead is not None else Lead.model_validate(row)
