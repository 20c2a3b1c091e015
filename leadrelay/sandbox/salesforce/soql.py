"""A SOQL subset: tokenizer, recursive-descent parser and evaluator.

Supported::

    SELECT field [, field …] | COUNT()      fields may be one-level relationship paths
                                            (Owner.Email), in WHERE and ORDER BY too
    FROM Lead | Contact | Account | Opportunity | User | LeadStatus | OpportunityStage | …
    [WHERE cond]        = != <> < <= > >= LIKE IN NOT IN, AND / OR / NOT, parentheses
    [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], …]
    [LIMIT n] [OFFSET n]

Literals: 'strings' (escapes ``\\n \\r \\t \\b \\f \\" \\' \\\\ \\uHHHH``; ``\\%`` and
``\\_`` only in LIKE; any other backslash is an error — crm-api-facts §2), numbers,
true / false / null, datetime literals (``2024-01-01T00:00:00Z``, ``…+02:00``), date literals
(``2024-01-01``) and the date keywords TODAY, YESTERDAY, TOMORROW, LAST_N_DAYS:n,
NEXT_N_DAYS:n (org time zone = UTC).

As in real SOQL, AND and OR cannot be mixed at one level without parentheses, string comparison
is case-insensitive, and a literal of the wrong type for its field is an INVALID_FIELD error.
Not supported (MALFORMED_QUERY): aggregates other than COUNT(), GROUP BY, semi-joins, subqueries,
FIELDS(), TYPEOF, WITH, FOR UPDATE.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from leadrelay.sandbox.salesforce.schema import (
    STRING_TYPES,
    FieldDef,
    SObjectDef,
    format_value,
    normalize_id,
)

Record = Mapping[str, Any]
Resolver = Callable[[str, Any], Record | None]
R = TypeVar("R", bound=Mapping[str, Any])

_TOKEN = re.compile(
    r"""
     (?P<ws>\s+)
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})(?![\dT])
    |(?P<number>[+-]?(?:\d+(?:\.\d+)?|\.\d+))(?![A-Za-z_])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),.:])
    """,
    re.VERBOSE,
)
_KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC",
    "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "NULL", "TRUE", "FALSE", "COUNT",
}  # fmt: skip
_DATE_KEYWORDS = {"TODAY", "YESTERDAY", "TOMORROW"}
_DATE_N_KEYWORDS = {"LAST_N_DAYS", "NEXT_N_DAYS"}
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'"}
_SIMPLE_ESCAPES["\\"] = "\\"
MAX_OFFSET = 2000
_TYPE_WORDS = {
    "datetime": "dateTime",
    "date": "date",
    "int": "double",
    "double": "double",
    "currency": "double",
    "boolean": "boolean",
}


class SoqlError(Exception):
    """A query Salesforce would reject: ``error_code`` and ``message`` of its error body."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


# --- tokens and AST --------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One lexical token; ``pos`` is its offset in the query text."""

    kind: str  # ident, string, number, datetime, date, op, punct, eof
    text: str
    pos: int

    @property
    def upper(self) -> str:
        """Keyword comparison form."""
        return self.text.upper() if self.kind == "ident" else ""


@dataclass(frozen=True)
class FieldRef:
    """A field path as written: ``Email`` or ``Owner.Email``."""

    path: tuple[str, ...]
    pos: int

    @property
    def text(self) -> str:
        """The path as written."""
        return ".".join(self.path)


@dataclass(frozen=True)
class Literal:
    """A literal value; ``kind`` is string, like, number, boolean, null, datetime, date, range."""

    kind: str
    value: Any
    pos: int
    text: str


@dataclass(frozen=True)
class Comparison:
    """``field op value`` (op is one of = != < <= > >= LIKE IN NOTIN)."""

    field: FieldRef
    op: str
    value: Literal | tuple[Literal, ...]


@dataclass(frozen=True)
class Not:
    """``NOT expr``."""

    expr: Expr


@dataclass(frozen=True)
class BoolOp:
    """``a AND b AND …`` or ``a OR b OR …``."""

    op: str
    items: tuple[Expr, ...]


Expr = Comparison | Not | BoolOp


@dataclass(frozen=True)
class OrderItem:
    """One ORDER BY key."""

    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass
class Query:
    """A parsed (not yet bound) SOQL query."""

    text: str
    fields: list[FieldRef]
    count: bool
    sobject: str
    sobject_pos: int
    where: Expr | None = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


# --- errors ---------------------------------------------------------------------------


def _located(text: str, pos: int, message: str) -> str:
    """Salesforce's error layout: the query line, a caret, row and column, then the reason."""
    before = text[:pos]
    row = before.count("\n") + 1
    line_start = before.rfind("\n") + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end != -1 else len(text)]
    column = pos - line_start + 1
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"


def _malformed(text: str, token: Token) -> SoqlError:
    shown = "<EOF>" if token.kind == "eof" else f"'{token.text}'"
    return SoqlError("MALFORMED_QUERY", _located(text, token.pos, f"unexpected token: {shown}"))


# --- tokenizer -------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens; raise MALFORMED_QUERY on a character SOQL has no use for."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "'":
            end = pos + 1
            while end < len(text) and text[end] != "'":
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise _malformed(text, Token("string", text[pos:], pos))
            tokens.append(Token("string", text[pos + 1 : end], pos))
            pos = end + 1
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            end = pos + 1
            while end < len(text) and not text[end].isspace():
                end += 1
            raise _malformed(text, Token("bad", text[pos:end], pos))
        kind = match.lastgroup or "ws"
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


def decode_string(raw: str, *, like: bool, text: str = "", pos: int = 0) -> str:
    """Decode a string literal's escapes; in LIKE, return a regular expression instead."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            if like and ch == "%":
                out.append(".*")
            elif like and ch == "_":
                out.append(".")
            else:
                out.append(re.escape(ch) if like else ch)
            i += 1
            continue
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if nxt in _SIMPLE_ESCAPES:
            decoded = _SIMPLE_ESCAPES[nxt]
            out.append(re.escape(decoded) if like else decoded)
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
            decoded = chr(int(raw[i + 2 : i + 6], 16))
            out.append(re.escape(decoded) if like else decoded)
            i += 6
        elif like and nxt in "%_":
            out.append(re.escape(nxt))
            i += 2
        else:
            message = (
                f"Invalid string literal '{raw}'. Illegal character sequence "
                f"'\\{nxt}' in string literal."
            )
            raise SoqlError("MALFORMED_QUERY", _located(text, pos, message))
    return "".join(out)


# --- parser ---------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != "eof":
            self.i += 1
        return token

    def error(self, token: Token | None = None) -> SoqlError:
        return _malformed(self.text, token or self.tok)

    def keyword(self, *words: str) -> bool:
        return self.tok.upper in words

    def expect_keyword(self, word: str) -> Token:
        if self.tok.upper != word:
            raise self.error()
        return self.advance()

    def expect_punct(self, ch: str) -> Token:
        if self.tok.kind != "punct" or self.tok.text != ch:
            raise self.error()
        return self.advance()

    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        fields: list[FieldRef] = []
        count = False
        if self.keyword("COUNT") and self.tokens[self.i + 1].text == "(":
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            count = True
        else:
            fields.append(self.field_ref())
            while self.tok.text == "," and self.tok.kind == "punct":
                self.advance()
                fields.append(self.field_ref())
        self.expect_keyword("FROM")
        if self.tok.kind != "ident" or self.tok.upper in _KEYWORDS:
            raise self.error()
        sobject = self.advance()
        query = Query(self.text, fields, count, sobject.text, sobject.pos)
        if self.keyword("WHERE"):
            self.advance()
            query.where = self.condition()
        if self.keyword("ORDER"):
            self.advance()
            self.expect_keyword("BY")
            query.order.append(self.order_item())
            while self.tok.text == "," and self.tok.kind == "punct":
                self.advance()
                query.order.append(self.order_item())
        if self.keyword("LIMIT"):
            self.advance()
            query.limit = self.integer()
        if self.keyword("OFFSET"):
            self.advance()
            offset_token = self.tok
            query.offset = self.integer()
            if query.offset > MAX_OFFSET:
                raise SoqlError(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    _located(
                        self.text, offset_token.pos, f"Maximum SOQL offset allowed is {MAX_OFFSET}"
                    ),
                )
        if self.tok.kind != "eof":
            raise self.error()
        return query

    def integer(self) -> int:
        token = self.tok
        if token.kind != "number" or not token.text.isdigit():
            raise self.error()
        self.advance()
        return int(token.text)

    def field_ref(self) -> FieldRef:
        token = self.tok
        if token.kind != "ident" or token.upper in _KEYWORDS:
            raise self.error()
        parts = [self.advance().text]
        while self.tok.kind == "punct" and self.tok.text == ".":
            self.advance()
            if self.tok.kind != "ident":
                raise self.error()
            parts.append(self.advance().text)
        return FieldRef(tuple(parts), token.pos)

    def order_item(self) -> OrderItem:
        ref = self.field_ref()
        descending = False
        if self.keyword("ASC", "DESC"):
            descending = self.advance().upper == "DESC"
        nulls_last = descending
        if self.keyword("NULLS"):
            self.advance()
            if not self.keyword("FIRST", "LAST"):
                raise self.error()
            nulls_last = self.advance().upper == "LAST"
        return OrderItem(ref, descending, nulls_last)

    def condition(self) -> Expr:
        items = [self.unary()]
        op: str | None = None
        while self.keyword("AND", "OR"):
            word = self.tok.upper
            # SOQL refuses a AND b OR c: mixing needs parentheses.
            if op is not None and word != op:
                raise self.error()
            op = word
            self.advance()
            items.append(self.unary())
        if op is None:
            return items[0]
        return BoolOp(op, tuple(items))

    def unary(self) -> Expr:
        if self.keyword("NOT"):
            self.advance()
            return Not(self.unary())
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        ref = self.field_ref()
        token = self.tok
        if token.kind == "op":
            self.advance()
            op = "!=" if token.text == "<>" else token.text
            return Comparison(ref, op, self.literal(like=False))
        if token.upper == "LIKE":
            self.advance()
            return Comparison(ref, "LIKE", self.literal(like=True))
        if token.upper == "NOT":
            self.advance()
            self.expect_keyword("IN")
            return Comparison(ref, "NOTIN", self.literal_list())
        if token.upper == "IN":
            self.advance()
            return Comparison(ref, "IN", self.literal_list())
        raise self.error()

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect_punct("(")
        values = [self.literal(like=False)]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            values.append(self.literal(like=False))
        self.expect_punct(")")
        return tuple(values)

    def literal(self, *, like: bool) -> Literal:
        token = self.tok
        kind = token.kind
        if kind == "string":
            self.advance()
            value = decode_string(token.text, like=like, text=self.text, pos=token.pos)
            return Literal("like" if like else "string", value, token.pos, token.text)
        if like:
            raise self.error()
        if kind == "number":
            self.advance()
            number = float(token.text) if "." in token.text else int(token.text)
            return Literal("number", number, token.pos, token.text)
        if kind == "datetime":
            self.advance()
            stamp = datetime.fromisoformat(token.text.replace("Z", "+00:00"))
            return Literal("datetime", stamp.astimezone(UTC), token.pos, token.text)
        if kind == "date":
            self.advance()
            try:
                day = date.fromisoformat(token.text)
            except ValueError:
                raise self.error(token) from None
            return Literal("date", day, token.pos, token.text)
        word = token.upper
        if word in ("TRUE", "FALSE"):
            self.advance()
            return Literal("boolean", word == "TRUE", token.pos, token.text)
        if word == "NULL":
            self.advance()
            return Literal("null", None, token.pos, token.text)
        if word in _DATE_KEYWORDS:
            self.advance()
            offset = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}[word]
            return Literal("range", (offset, offset + 1), token.pos, token.text)
        if word in _DATE_N_KEYWORDS:
            self.advance()
            self.expect_punct(":")
            days = self.integer()
            span = (-days, 1) if word == "LAST_N_DAYS" else (1, days + 1)
            return Literal("range", span, token.pos, f"{token.text}:{days}")
        raise self.error()


def parse(text: str) -> Query:
    """Parse a SOQL query; raise :class:`SoqlError` (MALFORMED_QUERY …) when it is not valid."""
    return _Parser(text).parse()


# --- binding and evaluation -------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A selected or filtered field, resolved against the schema."""

    spec: FieldDef
    relationship: str | None = None  # "Owner" for Owner.Email
    ref_field: str | None = None  # "OwnerId"
    target: str | None = None  # "User"

    def getter(self, resolve: Resolver) -> Callable[[Record], Any]:
        """A function reading this column's stored value from a record."""
        name = self.spec.name
        if self.relationship is None:
            return lambda record: record.get(name)
        ref_field, target = self.ref_field or "", self.target or ""

        def related_value(record: Record) -> Any:
            related = resolve(target, record.get(ref_field))
            return None if related is None else related.get(name)

        return related_value


def _date_range(offsets: tuple[int, int], spec: FieldDef) -> tuple[Any, Any]:
    today = datetime.now(UTC).date()
    start, end = today + timedelta(days=offsets[0]), today + timedelta(days=offsets[1])
    if spec.type == "date":
        return start, end
    return (
        datetime(start.year, start.month, start.day, tzinfo=UTC),
        datetime(end.year, end.month, end.day, tzinfo=UTC),
    )


def _fold(value: Any) -> Any:
    """Comparison form: strings are compared case-insensitively in SOQL."""
    return value.lower() if isinstance(value, str) else value


def _same(value: Any) -> Any:
    """Comparison form of ids: case-sensitive (18-character ids sort in creation order)."""
    return value


_ID_TYPES = frozenset({"id", "reference"})


@dataclass
class BoundQuery:
    """A query checked against the schema, ready to filter, sort and project records."""

    query: Query
    sobject: SObjectDef
    columns: list[Column]
    predicate: Callable[[Record], bool] | None
    sort_keys: list[tuple[Callable[[Record], Any], bool, bool, bool]]
    hints: list[tuple[str, frozenset[Any]]]
    resolve: Resolver

    @property
    def count_only(self) -> bool:
        """``SELECT COUNT()``: only totalSize is answered."""
        return self.query.count

    def matches(self, record: Record) -> bool:
        """Whether the WHERE clause accepts ``record``."""
        return self.predicate is None or self.predicate(record)

    def order(self, records: Sequence[R]) -> list[R]:
        """Sort by ORDER BY (stable, one key at a time from the last), then OFFSET and LIMIT."""
        ordered = list(records)
        for getter, descending, nulls_last, fold in reversed(self.sort_keys):
            null_rank = 2 if nulls_last != descending else 0
            norm = _fold if fold else _same

            def key(
                record: Record,
                get: Callable[[Record], Any] = getter,
                null_rank: int = null_rank,
                norm: Callable[[Any], Any] = norm,
            ) -> tuple[Any, ...]:
                value = get(record)
                return (null_rank,) if value is None else (1, norm(value))

            ordered.sort(key=key, reverse=descending)
        end = None if self.query.limit is None else self.query.offset + self.query.limit
        return ordered[self.query.offset : end]

    def project(self, record: Record, version: str) -> dict[str, Any]:
        """One ``records[]`` element: attributes, then the selected fields in SELECT order."""
        out: dict[str, Any] = {"attributes": _attributes(self.sobject.name, record, version)}
        for column in self.columns:
            if column.relationship is None:
                out[column.spec.name] = format_value(record.get(column.spec.name))
                continue
            related = self.resolve(column.target or "", record.get(column.ref_field or ""))
            if related is None:
                out.setdefault(column.relationship, None)
                continue
            nested = out.get(column.relationship)
            if not isinstance(nested, dict):
                nested = {"attributes": _attributes(column.target or "", related, version)}
                out[column.relationship] = nested
            nested[column.spec.name] = format_value(related.get(column.spec.name))
        return out

    def flat_row(self, record: Record) -> dict[str, Any]:
        """A CSV row for Bulk API query results: ``Owner.Email`` style column names."""
        row: dict[str, Any] = {}
        for column in self.columns:
            if column.relationship is None:
                row[column.spec.name] = record.get(column.spec.name)
            else:
                related = self.resolve(column.target or "", record.get(column.ref_field or ""))
                value = None if related is None else related.get(column.spec.name)
                row[f"{column.relationship}.{column.spec.name}"] = value
        return row


def _attributes(sobject: str, record: Record, version: str) -> dict[str, str]:
    return {
        "type": sobject,
        "url": f"/services/data/v{version}/sobjects/{sobject}/{record.get('Id')}",
    }


class _Binder:
    def __init__(self, query: Query, schema: Mapping[str, SObjectDef], resolve: Resolver) -> None:
        self.query = query
        self.text = query.text
        self.resolve = resolve
        self.by_lower = {name.lower(): sobject for name, sobject in schema.items()}
        sobject = self.by_lower.get(query.sobject.lower())
        if sobject is None:
            message = (
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use "
                "a custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names."
            )
            raise SoqlError("INVALID_TYPE", _located(self.text, query.sobject_pos, message))
        self.sobject = sobject

    def column(self, ref: FieldRef) -> Column:
        if len(ref.path) > 2:
            raise self._no_relationship(ref, ref.path[0])
        if len(ref.path) == 1:
            spec = self.sobject.field(ref.path[0])
            if spec is None:
                raise self._no_column(ref, ref.path[0], self.sobject.name)
            return Column(spec)
        relationship, name = ref.path
        ref_spec = next(
            (
                spec
                for spec in self.sobject.fields.values()
                if spec.relationship_name and spec.relationship_name.lower() == relationship.lower()
            ),
            None,
        )
        target = self.by_lower.get((ref_spec.reference_to or "").lower()) if ref_spec else None
        if ref_spec is None or target is None:
            raise self._no_relationship(ref, relationship)
        spec = target.field(name)
        if spec is None:
            raise self._no_column(ref, name, target.name)
        return Column(spec, ref_spec.relationship_name, ref_spec.name, target.name)

    def _no_column(self, ref: FieldRef, name: str, entity: str) -> SoqlError:
        message = (
            f"No such column '{name}' on entity '{entity}'. If you are attempting to use a custom "
            "field, be sure to append the '__c' after the custom field name. Please reference "
            "your WSDL or the describe call for the appropriate names."
        )
        return SoqlError("INVALID_FIELD", _located(self.text, ref.pos, message))

    def _no_relationship(self, ref: FieldRef, name: str) -> SoqlError:
        message = (
            f"Didn't understand relationship '{name}' in field path. If you are attempting to "
            "use a custom relationship, be sure to append the '__r' after the custom "
            "relationship name. Please reference your WSDL or the describe call for the "
            "appropriate names."
        )
        return SoqlError("INVALID_FIELD", _located(self.text, ref.pos, message))

    def bind(self) -> BoundQuery:
        columns: list[Column] = []
        seen: set[str] = set()
        for ref in self.query.fields:
            column = self.column(ref)
            key = ref.text.lower()
            if key in seen:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    _located(self.text, ref.pos, f"duplicate field selected: {ref.text}"),
                )
            seen.add(key)
            columns.append(column)
        predicate = self.compile(self.query.where) if self.query.where is not None else None
        sort_keys = []
        for item in self.query.order:
            column = self.column(item.field)
            if not column.spec.filterable:
                raise self._not_usable(item.field, "ordered")
            fold = column.spec.type not in _ID_TYPES
            sort_keys.append((column.getter(self.resolve), item.descending, item.nulls_last, fold))
        hints = _hints(self.query.where, self) if self.query.where is not None else []
        return BoundQuery(
            self.query, self.sobject, columns, predicate, sort_keys, hints, self.resolve
        )

    def _not_usable(self, ref: FieldRef, how: str) -> SoqlError:
        message = f"field '{ref.text}' can not be {how} in a query call"
        return SoqlError("INVALID_FIELD", _located(self.text, ref.pos, message))

    def compile(self, expr: Expr) -> Callable[[Record], bool]:
        if isinstance(expr, Not):
            inner = self.compile(expr.expr)
            return lambda record: not inner(record)
        if isinstance(expr, BoolOp):
            parts = [self.compile(item) for item in expr.items]
            if expr.op == "AND":
                return lambda record: all(part(record) for part in parts)
            return lambda record: any(part(record) for part in parts)
        return self.compile_comparison(expr)

    def coerce(self, literal: Literal, spec: FieldDef, ref: FieldRef) -> Any:
        """The literal as a stored value of ``spec``'s type, or INVALID_FIELD when it cannot be."""
        kind, ftype = literal.kind, spec.type
        if kind == "null":
            return None
        if ftype in STRING_TYPES:
            if kind not in ("string", "like"):
                message = (
                    f"value of filter criterion for field '{ref.text}' must be of type "
                    "string and should be enclosed in quotes"
                )
                raise SoqlError("INVALID_FIELD", _located(self.text, literal.pos, message))
            if ftype in ("id", "reference") and kind == "string":
                normal = normalize_id(literal.value)
                if normal is None and ftype == "id":
                    raise SoqlError(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        _located(self.text, literal.pos, f"invalid ID field: {literal.value}"),
                    )
                return normal or literal.value
            return literal.value
        expected = {
            "datetime": ("datetime", "range"),
            "date": ("date", "range"),
            "boolean": ("boolean",),
        }.get(ftype, ("number",))
        if kind not in expected:
            message = (
                f"value of filter criterion for field '{ref.text}' must be of type "
                f"{_TYPE_WORDS.get(ftype, ftype)} and should not be enclosed in quotes"
            )
            raise SoqlError("INVALID_FIELD", _located(self.text, literal.pos, message))
        if kind == "range":
            return _date_range(literal.value, spec)
        return literal.value

    def compile_comparison(self, comparison: Comparison) -> Callable[[Record], bool]:
        ref, op = comparison.field, comparison.op
        column = self.column(ref)
        spec = column.spec
        if not spec.filterable:
            raise self._not_usable(ref, "filtered")
        get = column.getter(self.resolve)
        norm = _same if spec.type in _ID_TYPES else _fold
        if op in ("IN", "NOTIN"):
            assert isinstance(comparison.value, tuple)
            values = {norm(self.coerce(lit, spec, ref)) for lit in comparison.value}
            if any(isinstance(v, tuple) for v in values):
                raise _malformed(self.text, Token("ident", comparison.value[0].text, ref.pos))
            if op == "IN":
                return lambda record: norm(get(record)) in values
            return lambda record: norm(get(record)) not in values
        assert isinstance(comparison.value, Literal)
        literal = comparison.value
        if op == "LIKE":
            if spec.type not in STRING_TYPES:
                message = f"invalid operator on {spec.type} field: LIKE"
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR", _located(self.text, literal.pos, message)
                )
            pattern = re.compile(literal.value, re.IGNORECASE | re.DOTALL)
            return lambda record: (
                isinstance(value := get(record), str) and pattern.fullmatch(value) is not None
            )
        target = self.coerce(literal, spec, ref)
        if isinstance(target, tuple):
            return _range_predicate(get, op, target)
        if target is None:
            if op == "=":
                return lambda record: get(record) is None
            if op == "!=":
                return lambda record: get(record) is not None
            return lambda record: False
        folded = norm(target)
        compare = _COMPARATORS[op]
        if op == "!=":
            return lambda record: norm(get(record)) != folded
        return lambda record: (value := get(record)) is not None and compare(norm(value), folded)


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _range_predicate(
    get: Callable[[Record], Any], op: str, span: tuple[Any, Any]
) -> Callable[[Record], bool]:
    start, end = span
    tests: dict[str, Callable[[Any], bool]] = {
        "=": lambda v: bool(start <= v < end),
        "!=": lambda v: not start <= v < end,
        "<": lambda v: bool(v < start),
        "<=": lambda v: bool(v < end),
        ">": lambda v: bool(v >= end),
        ">=": lambda v: bool(v >= start),
    }
    test = tests[op]
    return lambda record: (value := get(record)) is not None and test(value)


def _hints(expr: Expr, binder: _Binder) -> list[tuple[str, frozenset[Any]]]:
    """Equality constraints on plain fields that every match must meet (for index lookups)."""
    items: tuple[Expr, ...] = expr.items if isinstance(expr, BoolOp) and expr.op == "AND" else ()
    found: list[tuple[str, frozenset[Any]]] = []
    for item in items or (expr,):
        if not isinstance(item, Comparison) or len(item.field.path) != 1:
            continue
        spec = binder.column(item.field).spec
        if item.op == "=" and isinstance(item.value, Literal):
            values: tuple[Literal, ...] = (item.value,)
        elif item.op == "IN" and isinstance(item.value, tuple):
            values = item.value
        else:
            continue
        coerced = [binder.coerce(lit, spec, item.field) for lit in values]
        if any(v is None or isinstance(v, tuple) for v in coerced):
            continue
        found.append((spec.name, frozenset(coerced)))
    return found


def bind(query: Query, schema: Mapping[str, SObjectDef], resolve: Resolver) -> BoundQuery:
    """Check ``query`` against ``schema``; raise INVALID_TYPE / INVALID_FIELD … on a mismatch."""
    return _Binder(query, schema, resolve).bind()


def compile_query(text: str, schema: Mapping[str, SObjectDef], resolve: Resolver) -> BoundQuery:
    """Parse and bind in one step."""
    return bind(parse(text), schema, resolve)
