"""Lead identity and duplicate detection (DESIGN §2 "identify", §11 ``leadrelay dedupe``).

Three rules say that two records are one person; clusters are their transitive closure
(union-find), and every cluster lists the distinct reasons that joined it:

1. **Same email after normalization** — :func:`identity_email`: trimmed, lower-cased, IDNA domain;
   for Gmail, dots and ``+tags`` in the local part are dropped and ``googlemail.com`` folds into
   ``gmail.com`` (Gmail delivers all of those to one mailbox). Other domains keep their plus-tags:
   ``ops+eu@acme.io`` and ``ops+us@acme.io`` may well be different mailboxes.
2. **Same phone and last name** — E.164 phone and the folded last name (case and accents folded).
   Colleagues sharing a switchboard number have different last names and are not merged. Two
   people at one household number share a last name too, so the first names must not clearly
   differ: they match when either is missing, when they are equal after folding and nicknames
   (Bob = Robert), when one is the other's initial, or when they are one typo apart (Jon = John).
   ``Anna`` and ``Peter Berg`` at one number stay two leads.
3. **Name at the same company domain** — within a block of one company domain, the full names
   (folded, nicknames resolved, tokens sorted: rapidfuzz ``token_sort_ratio``) score at least
   :data:`NAME_THRESHOLD`. Free-mail domains are never a company, so they never form a block. A
   record needs a first and a last name (or two name tokens) to take part, and role addresses
   (info@, sales@) never do: a shared mailbox says nothing about who typed the name. An initial
   does not stand for a name here (J. Smith may be John or Jane). The male and female forms of
   one name (Daniel and Daniela, Mario and Maria) are one letter apart but two people:
   :func:`gendered_variants` keeps them apart in rules 2 and 3.

Records without a usable email, phone or name never match. An email or phone that cannot be
normalized simply does not count as an identity; the record is kept and can match by other rules.

:func:`find_clusters` works on a whole list (``leadrelay dedupe``, imports) and is built to stay
near-linear: emails hash, phones are only parsed for records whose last name and phone digits
already collide, and names are compared inside company blocks, with big blocks compared by a
sorted neighbourhood instead of all pairs. :func:`dedupe_csv` can make the compact identity keys
of a file's rows in worker processes (``leadrelay dedupe --jobs N``) and add them to one
:class:`ClusterIndex` in row order: the clusters of one process. :class:`IdentityIndex` applies
the same rules one lead at a time for the sync engine and capture.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from sys import intern
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from leadrelay.model import (
    FREE_MAIL_DOMAINS,
    ROLE_LOCAL_PARTS,
    Lead,
    domain_from_website,
    normalize_email,
    normalize_phone,
)
from leadrelay.sync.csvfile import CsvError, LeadCsv, SkippedRow

if TYPE_CHECKING:
    from os import PathLike

    from rich.console import RenderableType

#: Lowest full-name similarity (0..1, token sort ratio) that makes two records at one company
#: domain the same person.
NAME_THRESHOLD = 0.90

REASON_EMAIL = "same email after normalization"
REASON_PHONE = "same phone and last name"
RULE_EMAIL = "email"
RULE_PHONE = "phone_last_name"
RULE_NAME = "name_at_domain"

#: Blocks up to this size compare all pairs of names; bigger ones use a sorted neighbourhood.
ALL_PAIRS_BLOCK = 300
#: How many neighbours each name is compared with, per sort order, in a big block.
NEIGHBOURHOOD = 25

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_FAST_LOCAL = re.compile(r"[a-z0-9_'+\-]+(?:\.[a-z0-9_'+\-]+)*")
_FAST_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_PLAIN_PHONE = re.compile(r"\+?[0-9 ().\-/]+")
_NON_WORD = re.compile(r"[^\w]+")
#: Cell values that mean "no name given".
_PLACEHOLDER_NAMES = frozenset({"", "-", "n/a", "na", "none", "null", "unknown", "x", "test"})

#: Common English nicknames, folded to one given name so "Bob Smith" meets "Robert Smith".
NICKNAMES: dict[str, str] = {
    "bob": "robert",
    "bobby": "robert",
    "rob": "robert",
    "robbie": "robert",
    "bill": "william",
    "billy": "william",
    "will": "william",
    "liam": "william",
    "jim": "james",
    "jimmy": "james",
    "jamie": "james",
    "mike": "michael",
    "mikey": "michael",
    "mick": "michael",
    "dave": "david",
    "davey": "david",
    "tom": "thomas",
    "tommy": "thomas",
    "dick": "richard",
    "rick": "richard",
    "rich": "richard",
    "ricky": "richard",
    "chris": "christopher",
    "kate": "katherine",
    "katie": "katherine",
    "kathy": "katherine",
    "cathy": "catherine",
    "liz": "elizabeth",
    "beth": "elizabeth",
    "betty": "elizabeth",
    "lizzie": "elizabeth",
    "jen": "jennifer",
    "jenny": "jennifer",
    "alex": "alexander",
    "sandy": "alexandra",
    "dan": "daniel",
    "danny": "daniel",
    "matt": "matthew",
    "nick": "nicholas",
    "tony": "anthony",
    "joe": "joseph",
    "joey": "joseph",
    "steve": "steven",
    "stephen": "steven",
    "ben": "benjamin",
    "sam": "samuel",
    "greg": "gregory",
    "jeff": "jeffrey",
    "pat": "patricia",
    "patty": "patricia",
    "peggy": "margaret",
    "maggie": "margaret",
    "meg": "margaret",
    "sue": "susan",
    "susie": "susan",
    "andy": "andrew",
    "drew": "andrew",
    "ed": "edward",
    "eddie": "edward",
    "ted": "edward",
    "fred": "frederick",
    "larry": "lawrence",
    "ron": "ronald",
    "don": "donald",
    "ken": "kenneth",
    "tim": "timothy",
    "vicky": "victoria",
    "becky": "rebecca",
    "debbie": "deborah",
    "abby": "abigail",
    "josh": "joshua",
    "zach": "zachary",
    "nate": "nathan",
}


# --------------------------------------------------------------------------- normalization


@lru_cache(maxsize=65536)
def _domain_is_valid(domain: str) -> bool:
    """Whether email-validator accepts ``domain`` unchanged (checked once per domain)."""
    try:
        return normalize_email("x@" + domain) == "x@" + domain
    except ValueError:
        return False


def _normalized_email(value: str) -> str:
    """:func:`leadrelay.model.normalize_email`, with a fast path for plain ASCII addresses.

    The fast path answers only when the address is a dot-atom of common characters and its
    domain passed the validator before; anything else goes to the validator itself, so the
    result (or the error) is always the validator's.
    """
    text = value.strip()
    if text.isascii() and "<" not in text:
        lowered = text.lower()
        local, at, domain = lowered.rpartition("@")
        if (
            at
            and not lowered.startswith("mailto:")
            and len(local) <= 64
            and len(lowered) <= 254
            and _FAST_LOCAL.fullmatch(local)
            and _FAST_DOMAIN.fullmatch(domain)
            and _domain_is_valid(domain)
        ):
            return lowered
    return normalize_email(value)


def identity_email(email: str) -> str:
    """The email a person is identified by: normalized, Gmail dots and plus-tags folded.

    ``John.Smith+news@GoogleMail.com`` and ``johnsmith@gmail.com`` give ``johnsmith@gmail.com``;
    ``ops+eu@acme.io`` stays as it is. Raises ValueError (naming the reason) for an address that
    is not valid.
    """
    return _fold_gmail(_normalized_email(email))


def _fold_gmail(normalized: str) -> str:
    """The identity of an address :func:`~leadrelay.model.normalize_email` gave: Gmail's dots
    and plus-tags folded, ``googlemail.com`` as ``gmail.com``; other addresses as they are."""
    local, _, domain = normalized.rpartition("@")
    if domain in _GMAIL_DOMAINS:
        folded = local.split("+", 1)[0].replace(".", "")
        if folded:
            return f"{folded}@gmail.com"
    return normalized


def fold_name(value: str) -> str:
    """A name for comparison: accents and case folded, punctuation to spaces, spaces collapsed."""
    if value.isascii() and value.isalpha():
        # ASCII letters only: no accent, punctuation or space to fold, and casefold is lower
        return value.lower()
    return _fold_text(value)


def _fold_text(value: str) -> str:
    """:func:`fold_name` of any text, step by step."""
    if not value.isascii():
        decomposed = unicodedata.normalize("NFKD", value)
        value = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(_NON_WORD.sub(" ", value.casefold()).replace("_", " ").split())


def _person_name(value: str | None) -> str:
    if not value:
        return ""
    folded = fold_name(value)
    return "" if folded in _PLACEHOLDER_NAMES else folded


def canonical_first_name(folded: str) -> str:
    """The first given name of a folded first-name value, nicknames resolved (bob -> robert)."""
    first = folded.split(" ", 1)[0]
    return NICKNAMES.get(first, first)


def gendered_variants(a: str, b: str) -> bool:
    """Whether two first names are the male and female form of one name (Daniel, Daniela).

    One ends in ``a`` where the other adds it (Paul, Paula) or has another last letter
    (Mario, Maria): one letter apart, yet two people.
    """
    if a == b or len(a) < 2 or len(b) < 2:
        return False
    if a + "a" == b or b + "a" == a:
        return True
    return len(a) == len(b) and a[:-1] == b[:-1] and "a" in (a[-1], b[-1])


def first_names_compatible(a: str, b: str) -> bool:
    """Whether two folded, canonical first names may belong to one person (see rule 2)."""
    if not a or not b or a == b:
        return True
    if len(a) == 1 or len(b) == 1:
        return a[0] == b[0]
    if gendered_variants(a, b):
        return False
    return min(len(a), len(b)) >= 3 and OSA.distance(a, b, score_cutoff=1) <= 1


def _phone_tail(phone: str) -> str | None:
    """The last six digits of a phone typed with digits and separators only, else None.

    The national significant number is a suffix of the digits typed (national prefixes and
    country codes sit in front; an extension needs letters or ``#``), so two spellings of one
    E.164 number share these digits. Anything else is parsed right away instead.
    """
    if not _PLAIN_PHONE.fullmatch(phone):
        return None
    digits = "".join(ch for ch in phone if ch.isdigit())
    return digits[-6:] if len(digits) >= 6 else None


def _e164(phone: str, country: str | None) -> str | None:
    try:
        return normalize_phone(phone, country)
    except ValueError:
        return None


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class DedupeRecord:
    """What identity looks at in one lead; ``row`` numbers it in a list, ``key`` names a lead.

    Values are as given (a CSV cell or a Lead field); normalization happens when matching,
    except where ``normalized`` says the values are a canonical Lead's (:meth:`from_lead`): its
    email and company domain were normalized when the Lead was built, and are taken as they are.
    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, five times
    the cost of building one, and a record is made per lead of a list.
    """

    row: int
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company_domain: str | None = None
    company: str | None = None
    country: str | None = None
    key: str | None = None
    normalized: bool = False

    @classmethod
    def from_mapping(cls, row: int, values: Mapping[str, Any], *, key: str | None = None) -> Self:
        """A record from Lead-field-named values (a CSV row); ``website`` stands in for a domain."""

        def text(name: str) -> str | None:
            value = values.get(name)
            if value is None:
                return None
            value = str(value).strip()
            return value or None

        domain = text("company_domain")
        if domain is None and (website := text("website")) is not None:
            domain = domain_from_website(website)
        elif domain is not None:
            domain = domain_from_website(domain)
        return cls(
            row=row,
            email=text("email"),
            phone=text("phone"),
            first_name=text("first_name"),
            last_name=text("last_name"),
            company_domain=domain,
            company=text("company"),
            country=text("country"),
            key=key,
        )

    @classmethod
    def from_lead(cls, lead: Lead, row: int = 0) -> Self:
        """A record from a canonical Lead, keyed by the lead's key."""
        return cls(
            row,
            lead.email,
            lead.phone,
            lead.first_name,
            lead.last_name,
            lead.company_domain,
            lead.company,
            lead.country,
            lead.key,
            True,  # normalized: the Lead's own values
        )


class _Identity(NamedTuple):
    """The comparable parts of a record."""

    email: str | None
    last: str
    first: str
    name_key: str
    domain: str | None


def _identity(record: DedupeRecord) -> _Identity:
    email: str | None = None
    if record.email:
        if record.normalized:
            # A Lead's email went through normalize_email when the Lead was built.
            email = _fold_gmail(record.email)
        else:
            try:
                email = identity_email(record.email)
            except ValueError:
                email = None
    first = _person_name(record.first_name)
    last = _person_name(record.last_name)
    canonical_first = canonical_first_name(first) if first else ""
    tokens = f"{first} {last}".split()
    if first:
        tokens[0] = canonical_first
    name_key = " ".join(sorted(tokens)) if len(tokens) >= 2 else ""
    if email is not None and is_role_address(email):
        # a shared mailbox: the name typed is whoever filled the form, not the address's owner
        name_key = ""
    domain = record.company_domain or None
    if domain is not None and not record.normalized:
        domain = domain.lower()
    if domain is None and email is not None:
        domain = email.rpartition("@")[2]
    if domain in FREE_MAIL_DOMAINS:
        domain = None
    return _Identity(email, last, canonical_first, name_key, domain)


def is_role_address(email: str) -> bool:
    """Whether an email names a function (info@, sales@ …) rather than a person."""
    local = email.rpartition("@")[0].split("+", 1)[0]
    return local in ROLE_LOCAL_PARTS


def _name_reason(score: float, domain: str) -> str:
    return f"name {score / 100:.2f} at {domain}"


# --------------------------------------------------------------------------- clusters


@dataclass(frozen=True, slots=True)
class Cluster:
    """Rows that are one person: ``reason`` lists each distinct reason, ``rule`` their rule ids."""

    rows: list[int]
    reason: str
    rule: str


class _UnionFind:
    """Union-find over row numbers that records, per set, the reasons that joined it."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.reasons: dict[int, list[tuple[str, str]]] = {}

    def find(self, row: int) -> int:
        parent = self.parent
        root = row
        while (up := parent.get(root, root)) != root:
            root = up
        while row != root:
            up = parent[row]
            parent[row] = root
            row = up
        return root

    def union(self, a: int, b: int, rule: str, reason: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.parent.setdefault(ra, ra)
        merged = self.reasons.pop(ra, [])
        for item in [*self.reasons.pop(rb, []), (rule, reason)]:
            if item not in merged:
                merged.append(item)
        self.reasons[ra] = merged
        return True

    def clusters(self) -> list[Cluster]:
        members: dict[int, list[int]] = {}
        for row in self.parent:
            members.setdefault(self.find(row), []).append(row)
        result = []
        for root, rows in members.items():
            reasons = self.reasons[root]
            rules = list(dict.fromkeys(rule for rule, _ in reasons))
            result.append(
                Cluster(
                    rows=sorted(rows),
                    reason="; ".join(reason for _, reason in reasons),
                    rule="+".join(rules),
                )
            )
        result.sort(key=lambda cluster: cluster.rows[0])
        return result


def _join_names(
    uf: _UnionFind, a: tuple[int, str, str], b: tuple[int, str, str], score: float, domain: str
) -> None:
    if not gendered_variants(a[2], b[2]):
        uf.union(a[0], b[0], RULE_NAME, _name_reason(score, domain))


def _match_names(
    entries: list[tuple[int, str, str]], domain: str, cutoff: float, uf: _UnionFind
) -> None:
    """Join rows in one company block whose name keys score at least ``cutoff`` (0..100)."""
    names = [entry[1] for entry in entries]
    if len(entries) <= ALL_PAIRS_BLOCK:
        for i in range(len(entries) - 1):
            for _, score, j in process.extract(
                names[i],
                names[i + 1 :],
                scorer=fuzz.ratio,
                score_cutoff=cutoff,
                limit=None,
            ):
                _join_names(uf, entries[i], entries[i + 1 + j], score, domain)
        return
    # Sorted neighbourhood, twice: by the name and by the name reversed, so a typo near the
    # start of a name still leaves its twin close by in one of the two orders.
    for order in (
        sorted(range(len(entries)), key=names.__getitem__),
        sorted(range(len(entries)), key=lambda i: names[i][::-1]),
    ):
        ordered = [names[i] for i in order]
        for pos in range(len(order) - 1):
            window = ordered[pos + 1 : pos + 1 + NEIGHBOURHOOD]
            for _, score, j in process.extract(
                ordered[pos], window, scorer=fuzz.ratio, score_cutoff=cutoff, limit=None
            ):
                _join_names(uf, entries[order[pos]], entries[order[pos + 1 + j]], score, domain)


def _digest(text: str) -> bytes:
    """A 128-bit BLAKE2b digest of ``text``: an index key in 49 bytes instead of the string
    (two distinct identities share one with a probability of about n² / 2¹²⁹)."""
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


#: The compact identity keys of one record, all :func:`find_clusters` keeps of it: (row,
#: email digest, digest of last name and phone tail, phone as given, country, canonical first
#: name, company block domain, name key). Small and picklable: worker processes make them.
RowKeys = tuple[int, bytes | None, bytes | None, str | None, str | None, str, str | None, str]


def identity_keys(record: DedupeRecord) -> RowKeys | None:
    """The compact keys :func:`find_clusters` indexes ``record`` by; None when it has none
    (no usable email, phone with a last name, or name at a company domain)."""
    ident = _identity(record)
    email_key = _digest(ident.email) if ident.email is not None else None
    phone_key: bytes | None = None
    if ident.last and record.phone:
        tail = _phone_tail(record.phone)
        if tail is None:
            e164 = _e164(record.phone, record.country)
            tail = e164[-6:] if e164 else None
        if tail is not None:
            # a NUL cannot be in a folded name: the two parts cannot run into each other
            phone_key = _digest(f"{ident.last}\0{tail}")
    block = ident.domain if ident.domain is not None and ident.name_key else None
    if email_key is None and phone_key is None and block is None:
        return None
    return (
        record.row,
        email_key,
        phone_key,
        record.phone if phone_key is not None else None,
        record.country if phone_key is not None else None,
        ident.first,
        block,
        ident.name_key if block is not None else "",
    )


class ClusterIndex:
    """The index :func:`find_clusters` builds: feed it :func:`identity_keys` in row order with
    :meth:`add`, then call :meth:`clusters` once.

    The clusters depend only on the keys and their order, so keys made in other processes and
    added in row order give the clusters of one process, reasons and their order included.
    """

    def __init__(self, *, name_threshold: float = NAME_THRESHOLD) -> None:
        self._uf = _UnionFind()
        self._cutoff = name_threshold * 100
        # The index grows with the number of distinct people, as exact dedupe must; its keys
        # are 128-bit digests of the identity strings (not the strings), and the few first
        # names and company domains a list repeats are held once each (sys.intern).
        self._first_by_email: dict[bytes, int] = {}
        # digest of (last name, last 6 phone digits) -> (row, phone, country, first name);
        # collisions in groups
        self._first_by_phone: dict[bytes, tuple[int, str, str | None, str]] = {}
        self._phone_groups: dict[bytes, list[tuple[int, str, str | None, str]]] = {}
        self._blocks: dict[str, list[tuple[int, str, str]]] = {}

    def add(self, keys: RowKeys) -> None:
        """Index one record's keys (in the order the records come)."""
        row, email_key, phone_key, phone, country, first, domain, name_key = keys
        first_name = intern(first)
        if email_key is not None:
            seen = self._first_by_email.setdefault(email_key, row)
            if seen != row:
                self._uf.union(seen, row, RULE_EMAIL, REASON_EMAIL)
        if phone_key is not None and phone is not None:
            entry = (row, phone, country, first_name)
            first_entry = self._first_by_phone.setdefault(phone_key, entry)
            if first_entry is not entry:
                self._phone_groups.setdefault(phone_key, [first_entry]).append(entry)
        if domain is not None:
            self._blocks.setdefault(intern(domain), []).append((row, name_key, first_name))

    def add_all(self, keys: Iterable[RowKeys]) -> None:
        """:meth:`add` each of ``keys`` in turn."""
        for one in keys:
            self.add(one)

    def clusters(self) -> list[Cluster]:
        """Match the phone collisions and the company blocks; the clusters, by first row."""
        uf = self._uf
        self._first_by_email.clear()
        self._first_by_phone.clear()
        for group in self._phone_groups.values():
            by_number: dict[str, list[tuple[int, str]]] = {}
            for row, phone, country, first_name in group:
                e164 = _e164(phone, country)
                if e164 is not None:
                    by_number.setdefault(e164, []).append((row, first_name))
            for people in by_number.values():
                for i, (row_a, first_a) in enumerate(people):
                    for row_b, first_b in people[i + 1 :]:
                        if first_names_compatible(first_a, first_b):
                            uf.union(row_a, row_b, RULE_PHONE, REASON_PHONE)
        self._phone_groups.clear()

        for domain, entries in self._blocks.items():
            if len(entries) > 1:
                _match_names(entries, domain, self._cutoff, uf)
        self._blocks.clear()
        return uf.clusters()


def find_clusters(
    records: Iterable[DedupeRecord], *, name_threshold: float = NAME_THRESHOLD
) -> list[Cluster]:
    """Clusters of two or more records that are one person, ordered by their first row.

    ``records`` is consumed once (a generator over a large file is fine); only the compact
    identity keys are kept. Row numbers must be unique.
    """
    index = ClusterIndex(name_threshold=name_threshold)
    add = index.add
    for record in records:
        keys = identity_keys(record)
        if keys is not None:
            add(keys)
    return index.clusters()


# --------------------------------------------------------------------------- identity index


class IdentityMatch(NamedTuple):
    """The lead an incoming record is, and why."""

    key: str
    reason: str
    rule: str


@dataclass
class IdentityIndex:
    """Identity keys of the leads seen in one run, to dedupe incoming leads as they arrive.

    Same rules and the same normalization as :func:`find_clusters`; phones are parsed on
    :meth:`add` and :meth:`match`. Memory grows with the leads added (a few hundred bytes each).
    """

    name_threshold: float = NAME_THRESHOLD
    _by_email: dict[str, str] = field(default_factory=dict)
    _by_phone: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    _by_domain: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    _size: int = 0

    def __len__(self) -> int:
        return self._size

    @staticmethod
    def _phone_key(record: DedupeRecord, ident: _Identity) -> tuple[str, str] | None:
        if not ident.last or not record.phone:
            return None
        e164 = _e164(record.phone, record.country)
        return (e164, ident.last) if e164 else None

    def match(self, record: DedupeRecord) -> IdentityMatch | None:
        """The key of a lead already added that ``record`` is, with the reason; else None."""
        ident = _identity(record)
        if ident.email is not None and (key := self._by_email.get(ident.email)) is not None:
            return IdentityMatch(key, REASON_EMAIL, RULE_EMAIL)
        phone_key = self._phone_key(record, ident)
        if phone_key is not None:
            for key, first in self._by_phone.get(phone_key, ()):
                if first_names_compatible(ident.first, first):
                    return IdentityMatch(key, REASON_PHONE, RULE_PHONE)
        if ident.domain is not None and ident.name_key:
            entries = self._by_domain.get(ident.domain)
            if entries:
                for _, score, index in process.extract(
                    ident.name_key,
                    [entry[1] for entry in entries],
                    scorer=fuzz.ratio,
                    score_cutoff=self.name_threshold * 100,
                    limit=None,
                ):
                    key, _, first = entries[index]
                    if not gendered_variants(ident.first, first):
                        return IdentityMatch(key, _name_reason(score, ident.domain), RULE_NAME)
        return None

    def add(self, record: DedupeRecord) -> None:
        """Remember ``record`` under its ``key`` (the first lead keeps an identity it shares)."""
        if record.key is None:
            raise ValueError(f"record of row {record.row} has no lead key to index")
        key = record.key
        ident = _identity(record)
        if ident.email is not None:
            self._by_email.setdefault(ident.email, key)
        phone_key = self._phone_key(record, ident)
        if phone_key is not None:
            self._by_phone.setdefault(phone_key, []).append((key, ident.first))
        if ident.domain is not None and ident.name_key:
            self._by_domain.setdefault(ident.domain, []).append((key, ident.name_key, ident.first))
        self._size += 1


# --------------------------------------------------------------------------- CSV report


@dataclass
class DedupeReport:
    """What ``leadrelay dedupe FILE.csv`` found in a lead list."""

    clusters: list[Cluster]
    rows_read: int
    rows_skipped: list[SkippedRow]
    blank_rows: int = 0
    encoding: str = "utf-8"
    ignored_headers: list[str] = field(default_factory=list)
    #: Rows read that the record maker left out (never for ``leadrelay dedupe``'s own); not
    #: part of the JSON document.
    records_rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document of DESIGN §11, with the reading summary after ``clusters``."""
        return {
            "clusters": [{"rows": c.rows, "reason": c.reason} for c in self.clusters],
            "rows_read": self.rows_read,
            "skipped": [{"row": s.row_number, "reason": s.reason} for s in self.rows_skipped],
            "blank_rows": self.blank_rows,
            "encoding": self.encoding,
            "ignored_headers": self.ignored_headers,
        }


#: Columns dedupe looks at; a file needs at least one of the identity ones.
DEDUPE_IDENTITY_COLUMNS = ("email", "phone", "first_name", "last_name")

#: Most worker processes the default of ``jobs`` asks for, however many CPUs there are: the
#: parent reads the file and merges the keys, and more workers than it can feed only wait.
MAX_JOBS = 8
#: Rows per chunk a worker process is handed at a time.
CHUNK_ROWS = 2000
#: Files smaller than this are read in one process whatever ``jobs`` says: starting the workers
#: (fresh interpreters importing leadrelay, ~0.3 s of CPU each) costs more than they save on
#: ~20,000 rows (measured: 10,000 bench rows, 1.9 MB, took 1.4 s alone and 3.5 s with 2 jobs).
PARALLEL_MIN_BYTES = 4 * 1024 * 1024

#: Makes the record of one CSV row (its number and values by Lead field name), or None to leave
#: the row out (counted as rejected). Must be picklable (a module-level function or an instance
#: of a module-level class) to run in worker processes.
RecordMaker = Callable[[int, dict[str, str]], DedupeRecord | None]


def record_from_row(row: int, values: dict[str, str]) -> DedupeRecord:
    """The :data:`RecordMaker` of ``leadrelay dedupe``: the row's values as they are."""
    return DedupeRecord.from_mapping(row, values)


def default_jobs() -> int:
    """The CPUs this process may run on, at most :data:`MAX_JOBS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_JOBS))


def _worker_setup() -> None:
    """Run in each worker process as it starts."""
    from leadrelay.childproc import end_with_parent

    # Ctrl-C signals the whole process group: the parent alone handles it, cancels what is
    # queued and shuts the pool down, so a worker is not interrupted mid-chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL) cannot shut the pool down, and a worker waiting for
    # work would wait for ever: a worker ends with its parent.
    end_with_parent()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of ``jobs`` fresh worker processes for :func:`dedupe_csv` (use it as a context
    manager; the workers end with it)."""
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_setup,
    )


def _chunk_keys(
    make_record: RecordMaker, fields: list[str], rows: list[tuple[int, tuple[str, ...]]]
) -> tuple[list[RowKeys], int]:
    """In a worker: the identity keys of a chunk of rows, and how many rows were rejected."""
    keys: list[RowKeys] = []
    rejected = 0
    for row, cells in rows:
        record = make_record(row, dict(zip(fields, cells, strict=True)))
        if record is None:
            rejected += 1
            continue
        one = identity_keys(record)
        if one is not None:
            keys.append(one)
    return keys, rejected


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit in the main thread (where the default would
    kill the process at once) so that the worker pool is shut down on the way out."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def exit_on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _keys_in_parallel(
    lead_csv: LeadCsv,
    index: ClusterIndex,
    skipped: list[SkippedRow],
    make_record: RecordMaker,
    pool: Executor,
    jobs: int,
    chunk_rows: int,
) -> int:
    """Read ``lead_csv`` here, have ``pool`` make the keys of its rows in chunks, and add them
    to ``index`` in row order; returns the rows rejected by ``make_record``."""
    fields = lead_csv.fields
    pending: deque[Future[tuple[list[RowKeys], int]]] = deque()
    rejected = 0

    def merge_oldest() -> None:
        nonlocal rejected
        keys, declined = pending.popleft().result()
        index.add_all(keys)
        rejected += declined

    try:
        chunk: list[tuple[int, tuple[str, ...]]] = []
        for item in lead_csv.cell_rows():
            if isinstance(item, SkippedRow):
                skipped.append(item)
                continue
            chunk.append((item[0], item[1]))
            if len(chunk) >= chunk_rows:
                pending.append(pool.submit(_chunk_keys, make_record, fields, chunk))
                chunk = []
                # a few chunks a worker in flight: the workers never wait, memory stays flat
                while len(pending) > 2 * jobs:
                    merge_oldest()
        if chunk:
            pending.append(pool.submit(_chunk_keys, make_record, fields, chunk))
        while pending:
            merge_oldest()
    finally:
        for future in pending:
            future.cancel()
    return rejected


def dedupe_csv(
    path: str | PathLike[str],
    *,
    name_threshold: float = NAME_THRESHOLD,
    encoding: str | None = None,
    jobs: int | None = 1,
    make_record: RecordMaker = record_from_row,
    pool: Executor | None = None,
    chunk_rows: int | None = None,
) -> DedupeReport:
    """Read a lead CSV (headers are Lead field names) and cluster its duplicate rows.

    ``encoding`` names the file's encoding instead of detecting it. ``jobs`` above 1 (None:
    :func:`default_jobs`) makes the identity keys in that many worker processes (a file under
    :data:`PARALLEL_MIN_BYTES` is read in one): this process reads the rows, hands them out in
    chunks of ``chunk_rows`` (default :data:`CHUNK_ROWS`) and adds the keys to one index in
    row order, so the report is the one a single process makes. ``pool`` is a pool of
    workers to use instead of starting :func:`worker_pool` (it is left running).
    ``make_record`` makes each row's record, or rejects the row (counted in
    ``records_rejected``).

    Raises :class:`leadrelay.sync.csvfile.CsvError` when the file cannot be read at all or has
    none of the columns identity uses.
    """
    if jobs is None:
        jobs = default_jobs()
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if chunk_rows is None:
        chunk_rows = CHUNK_ROWS
    skipped: list[SkippedRow] = []
    rejected = 0
    index = ClusterIndex(name_threshold=name_threshold)
    with LeadCsv(path, required=(), encoding=encoding) as lead_csv:
        if not set(lead_csv.columns.values()) & set(DEDUPE_IDENTITY_COLUMNS):
            found = ", ".join(repr(h) for h in lead_csv.headers) or "none"
            raise CsvError(
                f"{lead_csv.path.name}: no column to identify leads by (need one of "
                f"{', '.join(DEDUPE_IDENTITY_COLUMNS)}); headers found: {found}"
            )
        if pool is not None:
            rejected = _keys_in_parallel(
                lead_csv, index, skipped, make_record, pool, jobs, chunk_rows
            )
        elif jobs > 1 and lead_csv.path.stat().st_size >= PARALLEL_MIN_BYTES:
            with _terminate_as_exit(), worker_pool(jobs) as own_pool:
                try:
                    rejected = _keys_in_parallel(
                        lead_csv, index, skipped, make_record, own_pool, jobs, chunk_rows
                    )
                except BaseException:
                    own_pool.shutdown(wait=True, cancel_futures=True)
                    raise
        else:
            add = index.add
            for item in lead_csv:
                if isinstance(item, SkippedRow):
                    skipped.append(item)
                    continue
                record = make_record(item.row_number, item.values)
                if record is None:
                    rejected += 1
                    continue
                keys = identity_keys(record)
                if keys is not None:
                    add(keys)
        return DedupeReport(
            clusters=index.clusters(),
            rows_read=lead_csv.rows_read,
            rows_skipped=skipped,
            blank_rows=lead_csv.blank_rows,
            encoding=lead_csv.encoding,
            ignored_headers=list(lead_csv.unknown_headers),
            records_rejected=rejected,
        )


def render(report: DedupeReport) -> list[RenderableType]:
    """Rich renderables for a report: the clusters, then skipped rows with their reasons."""
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = []
    clusters = Table(title=f"{len(report.clusters)} duplicate clusters in {report.rows_read} rows")
    clusters.add_column("rows", style="bold")
    clusters.add_column("why")
    for cluster in report.clusters:
        clusters.add_row(", ".join(map(str, cluster.rows)), cluster.reason)
    out.append(clusters)
    if report.rows_skipped:
        skipped = Table(title=f"{len(report.rows_skipped)} rows skipped")
        skipped.add_column("row", justify="right")
        skipped.add_column("reason")
        for row in report.rows_skipped:
            skipped.add_row(str(row.row_number), row.reason)
        out.append(skipped)
    notes = [f"encoding {report.encoding}", f"{report.blank_rows} blank rows"]
    if report.ignored_headers:
        notes.append("ignored columns: " + ", ".join(report.ignored_headers))
    out.append(Text("; ".join(notes), style="dim"))
    return out
