"""Dedupe: identity rules, traps that must not merge, the labelled set, the CSV report."""

from __future__ import annotations

import csv
import importlib.util
import io
import itertools
import random
import re
import string
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from rich.console import Console

from leadrelay.model import Lead, lead_from_row, normalize_email
from leadrelay.sync.csvfile import CsvError
from leadrelay.sync.dedupe import (
    ALL_PAIRS_BLOCK,
    REASON_EMAIL,
    REASON_PHONE,
    DedupeRecord,
    IdentityIndex,
    _fold_text,
    _identity,
    _normalized_email,
    dedupe_csv,
    find_clusters,
    first_names_compatible,
    fold_name,
    identity_email,
    render,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LABELLED = DATA / "dedupe_labelled.csv"


def rec(row: int, key: str | None = None, **values: str) -> DedupeRecord:
    return DedupeRecord.from_mapping(row, values, key=key)


def pairs(clusters_rows: list[list[int]]) -> set[tuple[int, int]]:
    return {p for rows in clusters_rows for p in itertools.combinations(sorted(rows), 2)}


# --------------------------------------------------------------------------- identity_email


@pytest.mark.parametrize(
    ("raw", "identity"),
    [
        ("  John.Smith@Acme.IO ", "john.smith@acme.io"),
        ("j.o.h.n.smith+news@gmail.com", "johnsmith@gmail.com"),
        ("JohnSmith@GoogleMail.com", "johnsmith@gmail.com"),
        ("ops+eu@acme.io", "ops+eu@acme.io"),
        ("mailto:Ann@Acme.io", "ann@acme.io"),
        ("<ann@acme.io>", "ann@acme.io"),
    ],
)
def test_identity_email(raw: str, identity: str) -> None:
    assert identity_email(raw) == identity


@pytest.mark.parametrize("raw", ["", "not-an-email", "a@b", "a..b@acme.io", "a@localhost"])
def test_identity_email_rejects_invalid_addresses(raw: str) -> None:
    with pytest.raises(ValueError):
        identity_email(raw)


@given(
    st.tuples(
        st.text(alphabet="aZ09._+-'!#é ", max_size=70),
        st.sampled_from(["acme.io", "Acme.IO", "x.co", "a..b", "-a.io", "localhost", "é.com", ""]),
    )
)
def test_fast_email_path_gives_the_validators_answer(parts: tuple[str, str]) -> None:
    raw = f"{parts[0]}@{parts[1]}"
    try:
        expected: str | None = normalize_email(raw)
    except ValueError:
        expected = None
    try:
        actual: str | None = _normalized_email(raw)
    except ValueError:
        actual = None
    assert actual == expected


# --------------------------------------------------------------------------- identity of a Lead

_LOCALS = st.text(alphabet="aBz09._+-'é", min_size=1, max_size=12)
_DOMAINS = st.sampled_from(
    ["acme.io", "Acme.IO", "gmail.com", "GoogleMail.com", "münchen.de", "xn--mnchen-3ya.de",
     "x.co", "info.example"]
)  # fmt: skip
_EMAILS = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", _LOCALS, _DOMAINS),
    st.builds(
        lambda local, domain, wrap: wrap.format(f"{local}@{domain}"),
        _LOCALS,
        _DOMAINS,
        st.sampled_from([" {} ", "<{}>", "mailto:{}", "MAILTO:{}"]),
    ),
)
_NAMES = st.one_of(
    st.sampled_from(["Ann", "Bob", "Robert", "José", "O'Brien", "Anne-Marie", "van  der Berg",
                     "ﬁona", "n/a", "Test", "-", "  "]),
    st.text(alphabet="aZé _.'-\u0301ß", max_size=12),
)  # fmt: skip


@given(
    email=st.none() | _EMAILS,
    first=st.none() | _NAMES,
    last=st.none() | _NAMES,
    domain=st.none() | st.sampled_from(["Acme.io", "https://www.Shop.example/x", "gmail.com"]),
    domain_field=st.sampled_from(["company_domain", "website"]),
    fast=st.booleans(),
)
def test_a_leads_identity_is_what_normalizing_its_values_again_gives(
    email: str | None,
    first: str | None,
    last: str | None,
    domain: str | None,
    domain_field: str,
    fast: bool,
) -> None:
    row = {
        name: value
        for name, value in (("email", email), ("first_name", first), ("last_name", last))
        if value is not None
    }
    if domain is not None:
        row[domain_field] = domain
    try:
        lead = lead_from_row(row) if fast else Lead.model_validate(row)
    except ValidationError:
        return
    record = DedupeRecord.from_lead(lead, row=1)
    assert record.normalized
    # the same record taken as raw values: email and domain normalized again
    assert _identity(record) == _identity(replace(record, normalized=False))


def test_a_record_from_a_lead_holds_its_identity_fields() -> None:
    lead = Lead(
        email="Ana@Acme.io",
        phone="+14155552671",
        first_name="Ana",
        last_name="Silva",
        company="Acme",
        website="https://www.acme.io",
        country="US",
    )
    assert DedupeRecord.from_lead(lead, row=3) == DedupeRecord(
        row=3,
        email="ana@acme.io",
        phone="+14155552671",
        first_name="Ana",
        last_name="Silva",
        company_domain="acme.io",
        company="Acme",
        country="US",
        key=lead.key,
        normalized=True,
    )


@given(st.text(max_size=16) | _NAMES)
def test_fold_name_of_ascii_letters_is_the_full_fold(value: str) -> None:
    assert fold_name(value) == _fold_text(value)


# --------------------------------------------------------------------------- rules


def test_same_email_after_normalization_is_one_cluster() -> None:
    (cluster,) = find_clusters(
        [rec(1, email="Ann.Lee@gmail.com"), rec(2, email="annlee@gmail.com")]
    )
    assert (cluster.rows, cluster.reason, cluster.rule) == ([1, 2], REASON_EMAIL, "email")


def test_plus_tags_on_other_domains_are_different_mailboxes() -> None:
    assert find_clusters([rec(1, email="ops+eu@acme.io"), rec(2, email="ops+us@acme.io")]) == []


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"phone": "+1 415 555 0132"}, {"phone": "(415) 555-0132", "country": "US"}),
        ({"phone": "+44 20 7946 0958"}, {"phone": "020 7946 0958", "country": "GB"}),
        ({"phone": "+1 415 555 0132"}, {"phone": "+1 415 555 0132 ext. 12"}),
    ],
    ids=["us-formats", "gb-national", "extension"],
)
def test_same_phone_and_last_name_is_one_cluster(a: dict[str, str], b: dict[str, str]) -> None:
    records = [
        rec(1, email="ann@acme.io", first_name="Ann", last_name="Lee", **a),
        rec(2, email="ann.lee@gmail.com", first_name="Ann", last_name="LEE", **b),
    ]
    (cluster,) = find_clusters(records)
    assert (cluster.rows, cluster.reason) == ([1, 2], REASON_PHONE)


def test_colleagues_sharing_a_switchboard_number_are_not_merged() -> None:
    records = [
        rec(1, email="ann@acme.io", phone="+1 415 555 0100", first_name="Ann", last_name="Lee"),
        rec(2, email="bo@acme.io", phone="+1 415 555 0100", first_name="Bo", last_name="Park"),
    ]
    assert find_clusters(records) == []


@pytest.mark.parametrize(
    ("first_a", "first_b", "merged"),
    [
        ("Anna", "Peter", False),
        ("Mario", "Maria", False),
        ("Robert", "Bob", True),
        ("John", "Jon", True),
        ("John", "J.", True),
        ("John", "", True),
    ],
)
def test_household_number_merges_only_compatible_first_names(
    first_a: str, first_b: str, merged: bool
) -> None:
    records = [
        rec(1, email="a1@gmail.com", phone="+4930123456", first_name=first_a, last_name="Berg"),
        rec(2, email="b2@yahoo.com", phone="030 123456", country="DE", first_name=first_b,
            last_name="Berg"),
    ]  # fmt: skip
    assert bool(find_clusters(records)) is merged


def test_similar_names_at_one_company_domain_merge_with_the_score() -> None:
    records = [
        rec(1, email="john.smith@acme.io", first_name="John", last_name="Smith"),
        rec(2, email="jsmith@acme.io", first_name="John", last_name="Smtih"),
    ]
    (cluster,) = find_clusters(records)
    assert cluster.rows == [1, 2]
    assert cluster.reason == "name 0.90 at acme.io"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("José", "Núñez"), ("Jose", "Nunez")),
        (("Robert", "Jones"), ("Bob", "Jones")),
        (("Smith", "John"), ("John", "Smith")),
    ],
    ids=["accents", "nickname", "swapped"],
)
def test_name_variants_at_one_domain_merge(a: tuple[str, str], b: tuple[str, str]) -> None:
    records = [
        rec(1, email="x1@acme.io", first_name=a[0], last_name=a[1]),
        rec(2, company_domain="https://www.acme.io/", first_name=b[0], last_name=b[1]),
    ]
    (cluster,) = find_clusters(records)
    assert cluster.reason == "name 1.00 at acme.io"


@pytest.mark.parametrize(
    "records",
    [
        [rec(1, email="ann.lee@acme.io", first_name="Ann", last_name="Lee"),
         rec(2, email="bo.park@acme.io", first_name="Bo", last_name="Park")],
        [rec(1, email="chris.miller@gmail.com", first_name="Chris", last_name="Miller"),
         rec(2, email="chrismillar@gmail.com", first_name="Chris", last_name="Millar")],
        [rec(1, email="info@acme.io", first_name="Sales", last_name="Team"),
         rec(2, email="sales@acme.io", first_name="Sales", last_name="Team")],
        [rec(1, email="info@acme.io", company="Acme"), rec(2, email="sales@acme.io",
                                                          company="Acme")],
        [rec(1, email="ann.lee@acme.io", first_name="Ann", last_name="Lee"),
         rec(2, email="ann.lee@globex.com", first_name="Ann", last_name="Lee")],
        [rec(1, email="daniel.weber@acme.io", first_name="Daniel", last_name="Weber"),
         rec(2, email="daniela.weber@acme.io", first_name="Daniela", last_name="Weber")],
        [rec(1, first_name="Ann"), rec(2, first_name="Ann")],
        [rec(1), rec(2)],
    ],
    ids=["colleagues", "gmail-similar", "role-named", "role", "other-company", "gendered",
         "first-name-only", "empty"],
)  # fmt: skip
def test_traps_are_not_merged(records: list[DedupeRecord]) -> None:
    assert find_clusters(records) == []


def test_transitive_duplicates_merge_and_list_each_reason() -> None:
    records = [
        rec(1, email="ann@acme.io", first_name="Ann", last_name="Lee"),
        rec(2, email="ANN@acme.io", phone="+1 415 555 0132", last_name="Lee"),
        rec(3, email="ann.lee@gmail.com", phone="415.555.0132", country="US", last_name="Lee"),
    ]
    (cluster,) = find_clusters(records)
    assert cluster.rows == [1, 2, 3]
    assert cluster.reason == f"{REASON_EMAIL}; {REASON_PHONE}"
    assert cluster.rule == "email+phone_last_name"


def test_big_blocks_still_find_typos() -> None:
    rng = random.Random(5)
    count = ALL_PAIRS_BLOCK * 2

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(8))

    people = [
        rec(n, email=f"p{n}@big.io", first_name=word(), last_name=word())
        for n in range(1, count + 1)
    ]
    original = people[41]
    assert original.first_name is not None and original.last_name is not None
    typo = (
        original.last_name[:3]
        + original.last_name[4]
        + original.last_name[3]
        + original.last_name[5:]
    )
    twin = rec(count + 1, email="twin@big.io", first_name=original.first_name, last_name=typo)
    assert [c.rows for c in find_clusters([*people, twin])] == [[42, count + 1]]


def test_invalid_values_do_not_count_but_the_record_still_matches() -> None:
    records = [
        rec(1, email="not an email", phone="n/a", first_name="Ann", last_name="Lee",
            company_domain="acme.io"),
        rec(2, email="ann.lee@acme.io", first_name="Ann", last_name="Lee"),
    ]  # fmt: skip
    assert [c.rows for c in find_clusters(records)] == [[1, 2]]


def test_first_names_compatible_is_symmetric() -> None:
    names = ["john", "jon", "j", "", "maria", "mario", "paul", "paula", "robert"]
    for a, b in itertools.product(names, repeat=2):
        assert first_names_compatible(a, b) == first_names_compatible(b, a)


# --------------------------------------------------------------------------- identity index


def test_identity_index_matches_by_each_rule() -> None:
    index = IdentityIndex()
    index.add(DedupeRecord.from_lead(Lead(key="ld_a", email="ann.lee@gmail.com")))
    index.add(DedupeRecord.from_lead(Lead(key="ld_b", phone="+14155550132", last_name="Park")))
    index.add(
        DedupeRecord.from_lead(
            Lead(key="ld_c", email="john.smith@acme.io", first_name="John", last_name="Smith")
        )
    )
    assert len(index) == 3
    by_email = index.match(rec(0, email="Ann.Lee+x@googlemail.com"))
    by_phone = index.match(rec(0, phone="(415) 555-0132", country="US", last_name="park"))
    by_name = index.match(rec(0, company_domain="acme.io", first_name="Jon", last_name="Smith"))
    assert by_email is not None and (by_email.key, by_email.reason) == ("ld_a", REASON_EMAIL)
    assert by_phone is not None and (by_phone.key, by_phone.reason) == ("ld_b", REASON_PHONE)
    assert by_name is not None and by_name.key == "ld_c"
    assert re.fullmatch(r"name 0\.9\d at acme\.io", by_name.reason)


def test_identity_index_keeps_traps_apart() -> None:
    index = IdentityIndex()
    index.add(rec(1, key="ld_a", email="info@acme.io", phone="+14155550100", last_name="Lee"))
    assert index.match(rec(2, email="sales@acme.io", phone="+14155550100")) is None
    assert index.match(rec(3, phone="+14155550100", first_name="Bo", last_name="Park")) is None


def test_identity_index_needs_a_lead_key() -> None:
    with pytest.raises(ValueError, match="row 7 has no lead key"):
        IdentityIndex().add(rec(7, email="a@acme.io"))


# --------------------------------------------------------------------------- labelled set


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_dedupe_labelled", DATA / "make_dedupe_labelled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_labelled_set_is_what_its_generator_makes() -> None:
    with open(LABELLED, encoding="utf-8", newline="") as handle:
        committed = list(csv.DictReader(handle))
    assert committed == _load_generator().generate()
    assert len(committed) >= 500


def test_labelled_set_precision_and_recall() -> None:
    truth: dict[str, list[int]] = defaultdict(list)
    with open(LABELLED, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            truth[row["cluster_id"]].append(number)
    report = dedupe_csv(LABELLED)
    assert report.rows_read == sum(len(rows) for rows in truth.values())
    expected = pairs(list(truth.values()))
    found = pairs([c.rows for c in report.clusters])
    true_positives = len(expected & found)
    precision = true_positives / len(found)
    recall = true_positives / len(expected)
    print(f"precision={precision:.3f} recall={recall:.3f}")
    assert precision >= 0.99
    assert recall >= 0.95


# --------------------------------------------------------------------------- CSV report


def test_dedupe_csv_json_lists_clusters_then_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "Email,Last Name,notes\nann@acme.io,Lee,x\nbo@acme.io\n\n ANN@acme.io ,Lee,y\n",
        encoding="utf-8",
    )
    document = dedupe_csv(path).to_json()
    assert list(document)[:3] == ["clusters", "rows_read", "skipped"]
    assert document["clusters"] == [{"rows": [1, 4], "reason": REASON_EMAIL}]
    assert document["rows_read"] == 2
    assert document["skipped"] == [{"row": 2, "reason": "row has 1 cells, the header has 3"}]
    assert document["blank_rows"] == 1
    assert document["ignored_headers"] == ["notes"]


def test_dedupe_csv_needs_an_identity_column(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("company,city\nAcme,Berlin\n", encoding="utf-8")
    with pytest.raises(CsvError, match=r"no column to identify leads by.*'company', 'city'"):
        dedupe_csv(path)


def test_render_shows_clusters_and_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text('email\nann@acme.io\nANN@acme.io\n"x\n', encoding="utf-8")
    console = Console(file=io.StringIO(), width=120, color_system=None)
    for renderable in render(dedupe_csv(path)):
        console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1, 2" in text and REASON_EMAIL in text
    assert "1 rows skipped" in text and "stray quote" in text
