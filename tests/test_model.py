"""The canonical Lead: normalization repairs what it can and names what it cannot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from leadrelay.model import (
    LOST_REASONS,
    STAGE_ORDER,
    WON_REASONS,
    Channel,
    EmployeeRange,
    Industry,
    Lead,
    OutcomeReason,
    Owner,
    Salutation,
    Stage,
    Touch,
    domain_from_website,
    fast_lead,
    lead_from_row,
    normalize_country,
    normalize_email,
    normalize_phone,
    parse_phone,
    plain_email,
    plain_phone,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ana.Silva@Example.COM ", "ana.silva@example.com"),
        ("<ana@example.com>", "ana@example.com"),
        ("mailto:ana@example.com", "ana@example.com"),
        ("jörg@Bücher.de", "jörg@xn--bcher-kva.de"),
        ("ana+news@example.com", "ana+news@example.com"),
    ],
)
def test_email_is_trimmed_lowered_and_idna_encoded(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ana@", "something after the @-sign"),
        ("ana.example.com", "must have an @-sign"),
        ("ana@@example.com", "valid email"),
        ("   ", "empty"),
    ],
)
def test_unrepairable_email_is_rejected_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_email(raw)


_ATOM = st.one_of(
    st.text("aX9!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=6),
    st.text("c", min_size=60, max_size=70),
)
_LABEL = st.one_of(
    st.text("aZ0-", min_size=1, max_size=5),
    st.builds("{}--{}".format, st.sampled_from(["", "a", "ab", "xn", "Z0a"]), st.text("a0")),
    st.text("b", min_size=60, max_size=66),
)
#: Addresses built like plain ones (dot-atoms at both sides; labels may start, end or double
#: with dashes or run too long; top-level domains of one letter, digits or special-use names)
#: and, mixed in, characters plain ones never hold.
_PLAIN_LIKE = st.builds(
    "{}@{}.{}".format,
    st.lists(_ATOM, min_size=1, max_size=4).map(".".join),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.one_of(
        st.text("abcIOZ", min_size=1, max_size=6),
        st.sampled_from(["123", "test", "local", "onion", "x1", "de-", "xn--p1ai"]),
    ),
)
_NEAR_PLAIN = st.builds(
    lambda text, at, extra: text[:at] + extra + text[at:],
    _PLAIN_LIKE,
    st.integers(0, 40),
    st.sampled_from(["", ".", "..", "@", " ", '"', "ä", "\\", "\u212a", "(", "--"]),
)


@settings(max_examples=500, derandomize=True)
@given(st.one_of(_PLAIN_LIKE, _NEAR_PLAIN, st.text(max_size=30)))
@example("ana@ab--c.io")
@example("ana@xn--p1ai.io")
@example("ana@" + "b" * 64 + ".io")
@example("ana@acme.onion")
@example("ana@acme.i0")
def test_the_plain_email_fast_path_agrees_with_email_validator(text: str) -> None:
    fast = plain_email(text)
    if fast is None:
        return
    try:
        full = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        pytest.fail(f"fast path accepted {text!r}, email-validator refuses it: {exc}")
    assert fast == f"{full.local_part.lower()}@{full.ascii_domain.lower()}"


@pytest.mark.parametrize(
    "text",
    ["ana@xn--bcher-kva.de", "ana@example.test", "Jörg@example.de", '"ana"@example.com', "a@b.c"],
)
def test_addresses_the_fast_path_leaves_to_email_validator(text: str) -> None:
    assert plain_email(text) is None


_SEPARATOR = st.sampled_from(["", " ", ".", "-", "", " ", "  ", "/", "--"])


def _digits(size: int) -> st.SearchStrategy[str]:
    """Mostly ``size`` digits, sometimes one more or one less."""
    return st.one_of(
        st.text("0123456789", min_size=size, max_size=size),
        st.text("0123456789", min_size=size - 1, max_size=size + 1),
    )


#: Texts built like NANP numbers (prefix, area code perhaps in parentheses, groups of 3, 3 and
#: 4 digits), with prefixes, group lengths, separators and endings the fast path must refuse.
_NANP_LIKE = st.builds(
    "{}{}{}{}{}{}{}{}".format,
    st.sampled_from(["", "+1", "1", "+1", "", "+", "+44", "0", "11", "+01", "001", "(1)"]),
    _SEPARATOR,
    st.one_of(_digits(3), _digits(3).map("({})".format), st.just("(212")),
    _SEPARATOR,
    _digits(3),
    _SEPARATOR,
    _digits(4),
    st.sampled_from(["", "", "", " x12", ";ext=3", "A", "#", ")", " "]),
)
_ONE_SEPARATOR = st.sampled_from(["", " ", ".", "-"])
#: Texts of exactly the shapes the fast path reads, with any digits (area codes and exchanges
#: starting with 0 or 1 included).
_NANP_SHAPED = st.builds(
    "{}{}{}{}{}{}{}".format,
    st.sampled_from(["", "+1", "1"]),
    _ONE_SEPARATOR,
    st.one_of(_digits(3), _digits(3).map("({})".format)).filter(lambda d: len(d) in (3, 5)),
    _ONE_SEPARATOR,
    st.text("0123456789", min_size=3, max_size=3),
    _ONE_SEPARATOR,
    st.text("0123456789", min_size=4, max_size=4),
)
_REGIONS = st.sampled_from(
    [None, "US", "CA", "US", "CA", "PR", "AG", "JM", "DE", "GB", "FR", "BR", "IN", "XX"]
)


def _full_phone(text: str, region: str | None) -> str | None:
    try:
        return parse_phone(text, region)
    except ValueError:
        return None


@settings(max_examples=2000, derandomize=True)
@given(st.one_of(_NANP_SHAPED, _NANP_LIKE, st.text("0123456789+() .-", max_size=18)), _REGIONS)
@example("+1 (415) 555-2671", None)
@example("1-415-555-2671", "US")
@example("4155552671", "CA")
@example("415 555 2671", "AG")
@example("+1 115 555 2671", "US")
def test_the_plain_phone_fast_path_agrees_with_phonenumbers(text: str, region: str | None) -> None:
    fast = plain_phone(text, region)
    if fast is None:
        return
    assert fast == _full_phone(text, region), f"{text!r} in {region}"


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("415 555 2671", None),
        ("415 555 2671", "PR"),
        ("1 415 555 2671", "GB"),
        ("+1 115 555 2671", "US"),
        ("+1 415 555 2671 x12", "US"),
        ("+44 20 7946 0958", "GB"),
        ("1-800-FLOWERS", "US"),
    ],
)
def test_numbers_the_phone_fast_path_leaves_to_phonenumbers(text: str, region: str | None) -> None:
    assert plain_phone(text, region) is None


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("030 1234567", "DE", "+49301234567"),
        ("030 1234567", "Germany", "+49301234567"),
        ("0044 20 7946 0958", None, "+442079460958"),
        ("+33 1 42 68 53 00", None, "+33142685300"),
        ("07911 123456", "uk", "+447911123456"),
    ],
)
def test_phone_becomes_e164_with_the_country_as_default_region(
    raw: str, country: str | None, expected: str
) -> None:
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(
    ("raw", "country", "reason"),
    [
        ("12", "US", "not a possible number"),
        ("555-2671", None, "no country"),
        ("call me", "US", "cannot be parsed"),
    ],
)
def test_unparseable_phone_is_rejected_with_the_reason(
    raw: str, country: str | None, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_phone(raw, country)


def test_lead_names_the_field_that_failed() -> None:
    with pytest.raises(ValidationError) as caught:
        Lead(email="ana@example.com", phone="12", country="US")
    assert caught.value.errors()[0]["loc"] == ("phone",)
    assert "not a possible number" in caught.value.errors()[0]["msg"]


def test_lead_phone_uses_the_leads_own_country() -> None:
    assert Lead(phone="020 7946 0958", country="United Kingdom").phone == "+442079460958"


@pytest.mark.parametrize(
    ("fields", "domain"),
    [
        ({"email": "ana@acme.io"}, "acme.io"),
        ({"email": "ana@gmail.com"}, None),
        ({"email": "ana@gmail.com", "website": "https://www.Acme.io/about"}, "acme.io"),
        ({"website": "acme.io"}, "acme.io"),
        ({"email": "ana@acme.io", "company_domain": "www.other.com"}, "other.com"),
    ],
)
def test_company_domain_from_work_email_or_website(
    fields: dict[str, str], domain: str | None
) -> None:
    assert Lead(**fields).company_domain == domain  # type: ignore[arg-type]


def test_names_are_trimmed_and_unicode_kept() -> None:
    lead = Lead(first_name="  José  María ", last_name="\tMüller\n")
    assert (lead.first_name, lead.last_name) == ("José María", "Müller")
    assert lead.full_name == "José María Müller"


def test_blank_strings_become_missing_values() -> None:
    lead = Lead(email="  ", phone="", first_name="   ", utm_source=" ")
    assert (lead.email, lead.phone, lead.first_name, lead.utm_source) == (None, None, None, None)


def test_assignment_is_normalized_too() -> None:
    lead = Lead()
    lead.email = " Ana@Example.com"
    assert lead.email == "ana@example.com"
    with pytest.raises(ValidationError, match="email"):
        lead.email = "not-an-email"


@pytest.mark.parametrize("field", ["stage", "channel", "rejection_reason", "tier"])
def test_enum_fields_reject_values_outside_the_enum(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Lead(**{field: "bogus"})  # type: ignore[arg-type]
    assert caught.value.errors()[0]["loc"] == (field,)


def test_unknown_fields_are_rejected_not_dropped() -> None:
    with pytest.raises(ValidationError, match="emial"):
        Lead(emial="ana@example.com")  # type: ignore[call-arg]


def test_every_stage_has_a_funnel_position() -> None:
    assert set(STAGE_ORDER) == set(Stage)
    assert STAGE_ORDER[Stage.MQL] < STAGE_ORDER[Stage.SQL] < STAGE_ORDER[Stage.WON]


def test_keys_are_unique_and_prefixed() -> None:
    keys = {Lead().key for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("ld_") for key in keys)


def test_lead_round_trips_through_json() -> None:
    lead = Lead(
        email="ana@acme.io",
        channel=Channel.PAID_SEARCH,
        stage=Stage.SQL,
        owner=Owner(id="7", email="rep@acme.io"),
        click_ids={"gclid": "abc"},
    )
    assert Lead.model_validate_json(lead.model_dump_json()) == lead


def test_touch_copies_the_current_attribution() -> None:
    lead = Lead(utm_source="google", utm_medium="cpc", click_ids={"gclid": "x"})
    touch = lead.touch()
    touch.click_ids["gclid"] = "changed"
    assert lead.click_ids == {"gclid": "x"}
    assert touch.utm_medium == "cpc"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("de", "DE"),
        ("USA", "US"),
        ("uk", "GB"),
        ("Atlantis", "Atlantis"),
        (" france ", "FR"),
        ("DEU", "DE"),
        ("Korea, Republic of", "KR"),
        ("Federal Republic of Germany", "DE"),
        ("Deutschland", "DE"),
    ],
)
def test_country_names_become_iso_codes(raw: str, expected: str) -> None:
    assert normalize_country(raw) == expected


@pytest.mark.parametrize("raw", ["", "localhost", "http://", "not a url"])
def test_domain_from_website_refuses_non_domains(raw: str) -> None:
    assert domain_from_website(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("software", Industry.SOFTWARE),
        ("Computer Software", Industry.SOFTWARE),
        ("COMPUTER_SOFTWARE", Industry.SOFTWARE),
        ("Not For Profit", Industry.NONPROFIT),
        ("  ", None),
    ],
)
def test_an_industry_spelling_becomes_the_canonical_industry(
    raw: str, expected: Industry | None
) -> None:
    assert Lead(industry=raw).industry is expected


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("industry", "Underwater basket weaving"),
        ("salutation", "Your Majesty"),
        ("country", "Atlantis"),
    ],
)
def test_a_value_no_list_covers_is_kept_verbatim_in_custom(field: str, raw: str) -> None:
    lead = Lead(**{field: raw}, custom={"segment": "smb"})
    assert getattr(lead, field) is None
    assert lead.custom == {"segment": "smb", f"{field}_raw": raw}


def test_assigning_an_unknown_industry_names_the_nearest_canonical_ones() -> None:
    lead = Lead()
    with pytest.raises(
        ValidationError, match=r"'Softwear' is not a canonical industry \(nearest: software"
    ):
        lead.industry = "Softwear"  # type: ignore[assignment]


def test_a_salutation_spelling_becomes_the_canonical_salutation() -> None:
    assert Lead(salutation="Mrs").salutation is Salutation.MRS


@pytest.mark.parametrize(
    ("country", "region", "expected"),
    [("US", "California", "US-CA"), ("CA", "ON", "CA-ON"), (None, "California", "California")],
)
def test_a_region_of_the_leads_country_becomes_its_iso_3166_2_code(
    country: str | None, region: str, expected: str
) -> None:
    assert Lead(country=country, region=region).region == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (0, EmployeeRange.SOLO),
        (1, EmployeeRange.SOLO),
        (50, EmployeeRange.R11_50),
        (51, EmployeeRange.R51_200),
        (20_000, EmployeeRange.R10001_PLUS),
    ],
)
def test_a_head_count_falls_in_one_canonical_range(count: int, expected: EmployeeRange) -> None:
    assert EmployeeRange.of(count) is expected


@pytest.mark.parametrize(("given", "kept"), [("eur", "EUR"), (" usd ", "USD"), ("", None)])
def test_currency_is_an_upper_case_iso_code(given: str, kept: str | None) -> None:
    assert Lead(currency=given).currency == kept


@pytest.mark.parametrize("given", ["euro", "E1R", "€"])
def test_currency_that_is_not_an_iso_code_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="ISO 4217"):
        Lead(currency=given)


def test_won_and_lost_reasons_cover_the_closed_set() -> None:
    assert set(OutcomeReason) == WON_REASONS | LOST_REASONS
    assert {OutcomeReason.PRICE, OutcomeReason.OTHER} == WON_REASONS & LOST_REASONS


_ROW_EMAILS = st.one_of(
    _PLAIN_LIKE,
    _NEAR_PLAIN,
    st.sampled_from(
        [
            " Ana.Silva@Example.COM ",
            "<ana@acme.io>",
            "mailto:ana@acme.io",
            "ana@gmail.com",
            "jörg@bücher.de",
            "ana@example.test",
            "<>",
            "",
            "  ",
        ]
    ),
)
_ROW_PHONES = st.one_of(
    _NANP_SHAPED,
    _NANP_LIKE,
    st.sampled_from(["+1 415 555 2671", "030 1234567", "+44 20 7946 0958", "", " "]),
)
_ROW_COUNTRIES = st.sampled_from(
    ["US", "us", "CA", "United States", "Germany", "DE", " US", "United  States", "Narnia", ""]
)
_ROW_TEXT = st.text(st.sampled_from("Aé z\t\n.-"), max_size=8)
_ROW_WEBSITES = st.sampled_from(["https://www.Acme.io/x", "acme", " acme.de ", "", "http://"])
#: Values the fast path leaves to pydantic whatever they are (fields it does not cover).
_ROW_OTHERS = st.sampled_from(
    [("industry", "Software"), ("region", "California"), ("key", "ld_1"), ("employees", "12")]
)


@st.composite
def _lead_rows(draw: st.DrawFn) -> dict[str, object]:
    columns: dict[str, st.SearchStrategy[str]] = {
        "email": _ROW_EMAILS,
        "phone": _ROW_PHONES,
        "country": _ROW_COUNTRIES,
        "first_name": _ROW_TEXT,
        "last_name": _ROW_TEXT,
        "company": _ROW_TEXT,
        "website": _ROW_WEBSITES,
        "utm_source": _ROW_TEXT,
        "landing_page": _ROW_TEXT,
    }
    row: dict[str, object] = {}
    for name, values in columns.items():
        if draw(st.booleans()):
            row[name] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        name, value = draw(_ROW_OTHERS)
        row[name] = value
    if draw(st.integers(0, 19)) == 0:
        row[draw(st.sampled_from(sorted(row) or ["email"]))] = 7
    if draw(st.sampled_from([False, False, False, True])):
        # a blank form field a mapping read as None
        row[draw(st.sampled_from([*columns, "industry", "employees"]))] = None
    return row


def _validated(row: dict[str, object]) -> Lead | None:
    try:
        return Lead.model_validate(row)
    except ValidationError:
        return None


def _comparable(lead: Lead) -> dict[str, object]:
    return lead.model_dump(exclude={"key", "created_at"})


@settings(max_examples=1500, derandomize=True)
@given(_lead_rows())
@example({"email": " Ana@Acme.IO ", "phone": "(415) 555-2671", "country": "US"})
@example({"email": "ana@gmail.com", "website": "https://www.Acme.io/x"})
@example({"phone": "415 555 2671", "country": "Narnia"})
def test_the_row_fast_path_builds_the_lead_model_validate_builds(row: dict[str, object]) -> None:
    fast = fast_lead(row)  # type: ignore[arg-type]
    if fast is None:
        return
    full = _validated(row)
    assert full is not None, f"fast path accepted {row!r}, model_validate refuses it"
    assert _comparable(fast) == _comparable(full)
    assert fast.model_fields_set == full.model_fields_set


#: Values a capture adds over a form's values (``build_lead``'s extras): of the Lead's own
#: types first, then others the fast path must leave to validation.
_EXTRAS: dict[str, tuple[st.SearchStrategy[object], st.SearchStrategy[object]]] = {
    "key": (st.just("ld_1"), st.sampled_from([None, 5])),
    "created_at": (
        st.sampled_from(
            [
                datetime(2024, 3, 1, 9, tzinfo=UTC),
                datetime(2024, 3, 1, 9, tzinfo=timezone(timedelta(hours=-5))),
                datetime(2024, 3, 1, 9),
            ]
        ),
        st.sampled_from(["2024-03-01T09:00:00Z", None]),
    ),
    "is_test": (st.booleans(), st.sampled_from([1, "yes", None])),
    "channel": (st.sampled_from([Channel.EMAIL, Channel.PAID_SEARCH, None]), st.just("email")),
    "click_ids": (st.sampled_from([{}, {"gclid": "G"}]), st.sampled_from([{"gclid": 5}, None])),
    "utm_source": (_ROW_TEXT | st.none(), st.just(7)),
    "utm_campaign": (_ROW_TEXT | st.none(), st.just(b"x")),
    "landing_page": (_ROW_TEXT | st.none(), st.just(7)),
    "referrer": (_ROW_TEXT | st.none(), st.just(7)),
    "first_touch": (
        st.sampled_from([None, Touch(channel=Channel.EMAIL, utm_source="nl")]),
        st.sampled_from([{"channel": "email"}, "x"]),
    ),
    "form_id": (st.sampled_from(["demo-webform", " f 1 ", None]), st.just(42)),
    "ad_id": (st.sampled_from(["123", None]), st.just(123)),
    "owner": (
        st.sampled_from([{"id": "005x"}, Owner(id="u"), None]),
        st.sampled_from([{"id": 5}, {"id": "u", "bogus": 1}, "u"]),
    ),
    "queue": (_ROW_TEXT | st.none(), st.just(7)),
    "first_name": (_ROW_TEXT, st.just(7)),
    "email": (st.just("ana@acme.io"), st.just(" Ana@Acme.io ")),
}


#: One in fifteen: how often an extra value is one of a type the Lead does not keep as is.
_RARELY = (False,) * 14 + (True,)
_PLAIN_ROWS = st.fixed_dictionaries(
    {},
    optional={
        "email": st.sampled_from(["ana@acme.io", "bo@gmail.com"]),
        "phone": st.just("+1 415 555 2671"),
        "country": st.just("US"),
        "first_name": _ROW_TEXT,
        "utm_source": _ROW_TEXT,
    },
)


@settings(max_examples=800, derandomize=True)
@given(
    row=_lead_rows() | _PLAIN_ROWS,
    names=st.sets(st.sampled_from(sorted(_EXTRAS))),
    data=st.data(),
)
def test_the_row_fast_path_with_extras_builds_the_lead_model_validate_builds(
    row: dict[str, object], names: set[str], data: st.DataObject
) -> None:
    extra: dict[str, object] = {}
    for name in sorted(names):
        typed, other = _EXTRAS[name]
        extra[name] = data.draw(other if data.draw(st.sampled_from(_RARELY)) else typed, name)
    fast = fast_lead(row, extra)  # type: ignore[arg-type]
    if fast is None:
        return
    full = _validated({**row, **extra})
    assert full is not None, f"fast path accepted {row!r} with {extra!r}, model_validate refuses"
    random_parts = {"key", "created_at"} - set(extra)
    assert fast.model_dump(exclude=random_parts) == full.model_dump(exclude=random_parts)
    assert fast.model_fields_set == full.model_fields_set
    if "first_touch" in extra:
        assert fast.first_touch is full.first_touch  # a Touch given is kept, not copied


def test_the_row_fast_path_takes_a_captures_extras() -> None:
    touch = Touch(channel=Channel.EMAIL, utm_source="nl")
    received = datetime(2024, 3, 1, 9, tzinfo=UTC)
    extra = {
        "key": "ld_1",
        "created_at": received,
        "channel": Channel.EMAIL,
        "utm_source": " nl ",
        "first_touch": touch,
        "owner": {"id": "005x"},
    }
    lead = fast_lead({"email": "ana@acme.io", "utm_source": "ignored"}, extra)
    assert lead is not None
    assert (lead.key, lead.created_at, lead.utm_source, lead.first_touch) == (
        "ld_1",
        received,
        "nl",
        touch,
    )
    assert lead.owner == Owner(id="005x")


def test_the_row_fast_path_covers_a_plain_csv_row() -> None:
    row = {"email": "ana@acme.io", "phone": "+1 415 555 2671", "country": "US", "company": "Acme"}
    lead = fast_lead(row)
    assert lead is not None
    assert (lead.email, lead.phone, lead.company_domain) == (
        "ana@acme.io",
        "+14155552671",
        "acme.io",
    )


@pytest.mark.parametrize(
    "row",
    [
        {"email": "jörg@bücher.de"},
        {"phone": "030 1234567", "country": "DE"},
        {"country": "Narnia"},
        {"industry": "Software"},
    ],
)
def test_the_row_fast_path_defers_what_takes_a_validator(row: dict[str, str]) -> None:
    assert fast_lead(row) is None


def test_lead_from_row_falls_back_to_validation_and_its_errors() -> None:
    assert lead_from_row({"phone": "030 1234567", "country": "DE"}).phone == "+49301234567"
    with pytest.raises(ValidationError, match="email"):
        lead_from_row({"email": "not an address"})
