"""A parser and evaluator for the COQL subset a connector needs (``POST /crm/v7/coql``).

``select f1, f2 from <module> where <criteria> [order by f [asc|desc], …] [limit N [offset M] |
limit M, N]``. Criteria: ``= != <> < > <= >=``, ``[not] like '%x%'``, ``[not] in (…)``,
``is [not] null``, ``[not] between a and b``, joined by ``and`` / ``or``. As the COQL doc
requires, more than two criteria must be grouped with parentheses (``(A and B) and C``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from leadrelay.sandbox.zoho.schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, parse_datetime
from leadrelay.sandbox.zoho.store import LeadStore, StoredRecord

DEFAULT_LIMIT = 200
MAX_LIMIT = 2000
MAX_OFFSET_REACH = 100_000
MAX_FIELDS = 50
MAX_ORDER_BY = 10
MAX_IN_VALUES = 50
MAX_CRITERIA = 25

Predicate = Callable[[StoredRecord], bool]
#: A position in the keyset order ``Modified_Time asc, id asc`` (the time to the second).
Key = tuple[datetime, int]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<op><>|!=|<=|>=|=|<|>)
    |(?P<punct>[(),*])
    |(?P<word>[A-Za-z_$][A-Za-z0-9_.$]*)
    """,
    re.VERBOSE,
)
_ID_FIELD = FieldDef("id", "Record Id", "bigint", "string")


class ZohoRefusal(Exception):
    """A request Zoho refuses with its error body's ``code``, ``message`` and ``details``."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class CoqlError(ZohoRefusal):
    """A query Zoho refuses: ``code`` (SYNTAX_ERROR, INVALID_QUERY, LIMIT_EXCEEDED …)."""


@dataclass
class Token:
    kind: str
    text: str
    pos: int

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "word" else ""


@dataclass
class Query:
    """A parsed select query."""

    fields: list[str]
    module: str
    where: Predicate
    order_by: list[tuple[FieldDef, bool]] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    #: every matching record is at or after this keyset position (from the where clause)
    start: Key | None = None

    @property
    def credits(self) -> int:
        """API credits by LIMIT size (COQL-Limitations doc): 1-200 → 1, ≤1000 → 2, else 3."""
        if self.limit <= 200:
            return 1
        return 2 if self.limit <= 1000 else 3

    def run(self, store: LeadStore) -> tuple[list[dict[str, Any]], bool]:
        """The selected rows of the page and whether more rows follow it.

        In the keyset order ``Modified_Time asc, id asc`` the store's index is read from the
        position the where clause starts at, up to the end of the page, so a keyset read costs
        its page, not the module, as with an indexed database.
        """
        wanted = self.offset + self.limit + 1
        if self._keyset_order():
            records = store.keyset_from(self.start or (datetime.min.replace(tzinfo=UTC), 0))
            rows = list(itertools.islice(filter(self.where, records), wanted))
        else:
            rows = [record for record in store.records.values() if self.where(record)]
            for definition, descending in reversed(self.order_by):
                present = [r for r in rows if _value(r, definition) is not None]
                missing = [r for r in rows if _value(r, definition) is None]
                present.sort(key=_sort_key(definition), reverse=descending)
                rows = present + missing
        page = rows[self.offset : self.offset + self.limit]
        more = len(rows) > self.offset + self.limit
        return [record.to_json(self.fields) for record in page], more

    def _keyset_order(self) -> bool:
        names = [(definition.api_name, descending) for definition, descending in self.order_by]
        return names in ([("Modified_Time", False)], [("Modified_Time", False), ("id", False)])


@dataclass(frozen=True)
class Bound:
    """What a condition implies about a matching record's keyset position.

    ``start``: every match is at or after it. ``second`` and ``min_id`` describe a single
    comparison (``Modified_Time = t`` pins the second; ``id > n`` bounds the id) so that
    ``(Modified_Time = t) and (id > n)`` can start at (t, n + 1).
    """

    start: Key | None = None
    second: datetime | None = None
    min_id: int | None = None


#: A parsed condition and the keyset bound it implies.
Condition = tuple[Predicate, Bound]
_NO_BOUND = Bound()


def _sort_key(definition: FieldDef) -> Callable[[StoredRecord], Any]:
    return lambda record: _value(record, definition)


def _syntax(message: str, token: Token | None) -> CoqlError:
    details: dict[str, Any] = {}
    if token is not None:
        details = {"near": token.text, "column": token.pos + 1, "line": 1}
    return CoqlError("SYNTAX_ERROR", message, details)


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _syntax(f"unexpected character {text[pos]!r}", Token("char", text[pos], pos))
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _value(record: StoredRecord, definition: FieldDef) -> Any:
    name = definition.api_name
    # Zoho keeps date-times to the second: a query compares and orders them at that precision.
    if name == "Created_Time":
        return record.created.replace(microsecond=0)
    if name == "Modified_Time":
        return record.modified.replace(microsecond=0)
    if name == "id":
        return int(record.id)
    raw = record.get(name)
    if definition.data_type == "datetime":
        moment = parse_datetime(raw) if isinstance(raw, str) else None
        return moment.replace(microsecond=0) if moment is not None else None
    if isinstance(raw, dict):
        return raw.get("id")
    if isinstance(raw, str) and definition.data_type in TEXT_TYPES:
        return raw.lower()
    return raw


class _Parser:
    def __init__(self, text: str, fields: dict[str, FieldDef], module: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.fields = fields
        self.module = module
        self.criteria = 0

    # -- token helpers -------------------------------------------------------------------------

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise _syntax("the query ends too early", None)
        self.index += 1
        return token

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.word in words

    def expect_word(self, word: str, message: str) -> None:
        token = self.peek()
        if token is None or token.word != word:
            raise _syntax(message, token)
        self.index += 1

    def expect_punct(self, char: str) -> None:
        token = self.peek()
        if token is None or token.text != char:
            raise _syntax(f"expected '{char}'", token)
        self.index += 1

    def field(self, token: Token) -> FieldDef:
        if token.kind != "word":
            raise _syntax("expected a field API name", token)
        definition = self.fields.get(token.text) or (_ID_FIELD if token.text == "id" else None)
        if definition is None:
            raise CoqlError(
                "INVALID_QUERY", "invalid column given", {"column_name": token.text, "line": 1}
            )
        return definition

    # -- grammar -------------------------------------------------------------------------------

    def parse(self) -> Query:
        if not self.at_word("select"):
            raise _syntax("only select queries are supported", self.peek())
        self.index += 1
        names: list[str] = []
        while True:
            token = self.take()
            if token.text == "*":
                raise _syntax("'*' is not supported; name the fields", token)
            definition = self.field(token)
            if definition.api_name in names:
                raise CoqlError(
                    "DUPLICATE_DATA", "duplicate select columns", {"column_name": token.text}
                )
            names.append(definition.api_name)
            if self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.index += 1
                continue
            break
        if len(names) > MAX_FIELDS:
            raise CoqlError("LIMIT_EXCEEDED", "select column limit exceeded", {"limit": MAX_FIELDS})
        self.expect_word("from", "the query does not contain the from clause")
        module = self.take()
        if module.kind != "word":
            raise _syntax("expected a module API name", module)
        if module.text != self.module:
            raise CoqlError("INVALID_QUERY", "invalid module given", {"module": module.text})
        # COQL doc: "The query does not contain either proper criteria, base table, or the
        # where clause" is a SYNTAX_ERROR, so a where clause is required.
        self.expect_word("where", "the query does not contain the where clause")
        where, bound = self.condition()
        query = Query(names, module.text, where, start=bound.start)
        if self.at_word("and", "or"):
            raise _syntax("more than two criteria must be grouped with parentheses", self.peek())
        if self.at_word("order"):
            self.index += 1
            self.expect_word("by", "expected 'by' after 'order'")
            query.order_by = self.order_list()
        if self.at_word("limit"):
            self.index += 1
            self.limit_clause(query)
        if self.peek() is not None:
            raise _syntax("unexpected text at the end of the query", self.peek())
        return query

    def order_list(self) -> list[tuple[FieldDef, bool]]:
        order: list[tuple[FieldDef, bool]] = []
        while True:
            definition = self.field(self.take())
            descending = False
            if self.at_word("asc", "desc"):
                descending = self.take().word == "desc"
            order.append((definition, descending))
            token = self.peek()
            if token is not None and token.text == ",":
                self.index += 1
                continue
            break
        if len(order) > MAX_ORDER_BY:
            raise CoqlError("LIMIT_EXCEEDED", "order by limit exceeded", {"limit": MAX_ORDER_BY})
        return order

    def number(self) -> int:
        token = self.take()
        if token.kind != "number" or "." in token.text or token.text.startswith("-"):
            raise _syntax("expected a whole number", token)
        return int(token.text)

    def limit_clause(self, query: Query) -> None:
        first = self.number()
        token = self.peek()
        if token is not None and token.text == ",":
            self.index += 1
            query.offset, query.limit = first, self.number()
        elif self.at_word("offset"):
            self.index += 1
            query.limit, query.offset = first, self.number()
        else:
            query.limit = first
        if query.limit < 1 or query.limit > MAX_LIMIT:
            raise CoqlError("LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_LIMIT})
        if query.offset + query.limit > MAX_OFFSET_REACH:
            raise CoqlError(
                "LIMIT_EXCEEDED", "max records limit exceeded", {"limit": MAX_OFFSET_REACH}
            )

    def condition(self) -> Condition:
        left, left_bound = self.operand()
        if not self.at_word("and", "or"):
            return left, left_bound
        joiner = self.take().word
        right, right_bound = self.operand()
        starts = [b.start for b in (left_bound, right_bound) if b.start is not None]
        if joiner == "or":
            # A match satisfies one side: it is after the earlier of two starts.
            either = min(starts) if len(starts) == 2 else None
            return (lambda record: left(record) or right(record)), Bound(either)
        # A match satisfies both sides: it is after the later start, and a pinned second
        # with an id bound starts at that id.
        for pinned, other in ((left_bound, right_bound), (right_bound, left_bound)):
            if pinned.second is not None and other.min_id is not None:
                starts.append((pinned.second, other.min_id))
        return (lambda record: left(record) and right(record)), Bound(max(starts, default=None))

    def operand(self) -> Condition:
        token = self.peek()
        if token is not None and token.text == "(":
            self.index += 1
            inner = self.condition()
            if self.at_word("and", "or"):
                raise _syntax(
                    "more than two criteria must be grouped with parentheses", self.peek()
                )
            self.expect_punct(")")
            return inner
        start = self.index
        predicate = self.comparison()
        return predicate, _bound(self.tokens[start : self.index])

    def literal(self, definition: FieldDef) -> Any:
        token = self.take()
        if token.kind == "string":
            text: Any = _unquote(token.text)
        elif token.kind == "number":
            text = token.text
        elif token.kind == "word" and token.word in {"true", "false"}:
            text = token.word
        elif token.kind == "word":
            text = token.text
        else:
            raise _syntax("expected a value", token)
        return _coerce(definition, text)

    def comparison(self) -> Predicate:
        self.criteria += 1
        if self.criteria > MAX_CRITERIA:
            raise CoqlError("LIMIT_EXCEEDED", "criteria limit exceeded", {"limit": MAX_CRITERIA})
        definition = self.field(self.take())
        kind = definition.data_type
        ordered = kind in NUMBER_TYPES or kind in {"datetime", "bigint"}
        token = self.take()
        negate = False
        if token.word == "is":
            if self.at_word("not"):
                self.index += 1
                negate = True
            self.expect_word("null", "expected 'null' after 'is'")
            return lambda r: (_value(r, definition) in (None, "")) != negate
        if token.word == "not":
            negate = True
            token = self.take()
        if token.word == "like":
            if kind not in TEXT_TYPES:
                raise _operator_error(definition, "like")
            pattern = self.take()
            if pattern.kind != "string":
                raise _syntax("like needs a quoted pattern", pattern)
            regex = _like(_unquote(pattern.text))
            return lambda r: (
                (
                    isinstance(_value(r, definition), str)
                    and bool(regex.match(_value(r, definition)))
                )
                != negate
            )
        if token.word == "in":
            if kind == "boolean":
                raise _operator_error(definition, "in")
            self.expect_punct("(")
            values = [self.literal(definition)]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.index += 1
                values.append(self.literal(definition))
            self.expect_punct(")")
            if len(values) > MAX_IN_VALUES:
                raise CoqlError(
                    "LIMIT_EXCEEDED", "too many values for in", {"limit": MAX_IN_VALUES}
                )
            return lambda r: (_value(r, definition) in values) != negate
        if token.word == "between":
            if not ordered:
                raise _operator_error(definition, "between")
            low = self.literal(definition)
            self.expect_word("and", "between needs 'and'")
            high = self.literal(definition)
            return lambda r: (
                (_value(r, definition) is not None and low <= _value(r, definition) <= high)
                != negate
            )
        if negate or token.kind != "op":
            raise _syntax("expected a comparison operator", token)
        operator = "!=" if token.text == "<>" else token.text
        if operator in {"<", ">", "<=", ">="} and not ordered:
            raise _operator_error(definition, operator)
        if kind == "boolean" and operator != "=":
            raise _operator_error(definition, operator)
        expected = self.literal(definition)
        return _compare(definition, operator, expected)


def _bound(tokens: list[Token]) -> Bound:
    """The keyset bound one comparison sets: on Modified_Time (``>``, ``>=``, ``=``,
    ``between``) or on id (``>``, ``>=``); none for anything else."""
    if len(tokens) < 3 or tokens[1].kind not in ("op", "word"):
        return _NO_BOUND
    name, operator, value = tokens[0].text, tokens[1].text.lower(), tokens[2]
    if name == "id" and operator in (">", ">=") and value.kind in ("number", "string"):
        text = _unquote(value.text) if value.kind == "string" else value.text
        if not text.isdigit():
            return _NO_BOUND
        return Bound(min_id=int(text) + (1 if operator == ">" else 0))
    if name != "Modified_Time" or value.kind != "string":
        return _NO_BOUND
    moment = parse_datetime(_unquote(value.text))
    if moment is None or operator not in (">", ">=", "=", "between"):
        return _NO_BOUND
    # Zoho keeps date-times to the second: "> t" starts at the next second.
    second = moment.astimezone(UTC).replace(microsecond=0)
    if operator == ">":
        return Bound((second + timedelta(seconds=1), 0))
    return Bound((second, 0), second if operator == "=" else None)


def _operator_error(definition: FieldDef, operator: str) -> CoqlError:
    return CoqlError(
        "INVALID_QUERY",
        "invalid operator found",
        {"column_name": definition.api_name, "operator": operator},
    )


def _like(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in pattern.lower().split("%")]
    return re.compile("^" + ".*".join(parts) + "$", re.DOTALL)


def _coerce(definition: FieldDef, text: str) -> Any:
    kind = definition.data_type
    try:
        if kind in NUMBER_TYPES:
            return float(text)
        if kind == "bigint":
            return int(text)
    except ValueError:
        raise CoqlError(
            "INVALID_QUERY",
            "invalid value given for the column",
            {"column_name": definition.api_name, "expected_data_type": kind},
        ) from None
    if kind == "datetime":
        moment = parse_datetime(text)
        if moment is None:
            raise CoqlError(
                "INVALID_QUERY",
                "invalid value given for the column",
                {"column_name": definition.api_name, "expected_data_type": kind},
            )
        return moment
    if kind == "boolean":
        if text.lower() not in {"true", "false"}:
            raise CoqlError(
                "INVALID_QUERY",
                "invalid value given for the column",
                {"column_name": definition.api_name, "expected_data_type": kind},
            )
        return text.lower() == "true"
    return text.lower() if kind in TEXT_TYPES else text


def _compare(definition: FieldDef, operator: str, expected: Any) -> Predicate:
    def test(record: StoredRecord) -> bool:
        actual = _value(record, definition)
        if definition.data_type in NUMBER_TYPES and actual is not None:
            actual = float(actual)
        if operator == "=":
            return bool(actual == expected)
        if operator == "!=":
            return bool(actual != expected)
        if actual is None:
            return False
        if operator == "<":
            return bool(actual < expected)
        if operator == ">":
            return bool(actual > expected)
        if operator == "<=":
            return bool(actual <= expected)
        return bool(actual >= expected)

    return test


def query_module(text: str) -> str | None:
    """The module a query's ``from`` clause names (None when it has none), so the caller can
    parse the query against that module's fields."""
    found = re.search(r"\bfrom\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.IGNORECASE)
    return found.group(1) if found else None


def parse_query(text: str, fields: dict[str, FieldDef], module: str = "Leads") -> Query:
    """Parse a ``select_query`` over ``module`` (whose fields are ``fields``); raise
    :class:`CoqlError` in Zoho's terms."""
    if not isinstance(text, str) or not text.strip():
        raise CoqlError("SYNTAX_ERROR", "the query is empty", {})
    return _Parser(text, fields, module).parse()
