"""The ``criteria`` of Zoho's Search Records API, parsed into a predicate over stored Leads.

Syntax (Search Records doc): ``(({api_name}:{operator}:{value})and/or(...))``, nesting with
parentheses, at most 10 criteria. A ``(``, ``)`` or ``,`` inside a value is escaped with a
backslash (``\\(``, ``\\)``, ``\\,``; ``\\\\`` for a backslash itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leadrelay.sandbox.zoho.schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, parse_datetime
from leadrelay.sandbox.zoho.store import StoredRecord

MAX_CRITERIA = 10
OPERATORS = frozenset(
    {
        "equals",
        "not_equal",
        "starts_with",
        "in",
        "not_in",
        "greater_than",
        "greater_equal",
        "less_than",
        "less_equal",
        "between",
    }
)
_ORDERED = frozenset({"greater_than", "greater_equal", "less_than", "less_equal", "between"})
_SYSTEM = {
    "id": FieldDef("id", "Record Id", "bigint", "string"),
}

Predicate = Callable[[StoredRecord], bool]


class CriteriaError(Exception):
    """Malformed criteria: answered as 400 INVALID_QUERY with ``details``."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.details = {"reason": reason, **details}


@dataclass
class _Condition:
    api_name: str
    operator: str
    values: list[str]


def _comparable(record: StoredRecord, field: FieldDef) -> Any:
    name = field.api_name
    if name == "Created_Time":
        return record.created
    if name == "Modified_Time":
        return record.modified
    value = record.get(name)
    if isinstance(value, dict):
        return value.get("id")
    return value


class _Parser:
    def __init__(self, text: str, fields: dict[str, FieldDef]) -> None:
        self.text = text
        self.pos = 0
        self.fields = fields
        self.count = 0

    def fail(self, reason: str) -> CriteriaError:
        return CriteriaError(reason, position=self.pos)

    def parse(self) -> Predicate:
        if not self.text.strip():
            raise CriteriaError("criteria is empty")
        predicate = self.expression()
        self.skip_spaces()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the criteria")
        return predicate

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def expression(self) -> Predicate:
        # "and" binds tighter than "or", as in Zoho's search.
        terms = [self.conjunction()]
        while self.keyword("or"):
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda record: any(term(record) for term in terms)

    def conjunction(self) -> Predicate:
        terms = [self.term()]
        while self.keyword("and"):
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return lambda record: all(term(record) for term in terms)

    def keyword(self, word: str) -> bool:
        self.skip_spaces()
        end = self.pos + len(word)
        if self.text[self.pos : end].lower() != word:
            return False
        if self.text[end:].lstrip(" ")[:1] != "(":
            return False
        self.pos = end
        return True

    def term(self) -> Predicate:
        self.skip_spaces()
        if self.text[self.pos : self.pos + 1] != "(":
            raise self.fail("expected '(' to open a criterion")
        self.pos += 1
        self.skip_spaces()
        if self.text[self.pos : self.pos + 1] == "(":
            inner = self.expression()
            self.skip_spaces()
            if self.text[self.pos : self.pos + 1] != ")":
                raise self.fail("unbalanced parentheses")
            self.pos += 1
            return inner
        return self.condition()

    def condition(self) -> Predicate:
        raw: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unbalanced parentheses")
            char = self.text[self.pos]
            if char == "\\":
                raw.append(self.text[self.pos : self.pos + 2])
                self.pos += 2
                continue
            if char == ")":
                self.pos += 1
                break
            if char == "(":
                raise self.fail("unescaped '(' in a value; escape it as \\(")
            raw.append(char)
            self.pos += 1
        self.count += 1
        if self.count > MAX_CRITERIA:
            raise CriteriaError(f"more than {MAX_CRITERIA} criteria", limit=MAX_CRITERIA)
        return self.build(_split_condition(raw))

    def build(self, condition: _Condition) -> Predicate:
        field = self.fields.get(condition.api_name) or _SYSTEM.get(condition.api_name)
        if field is None:
            raise CriteriaError("invalid field", api_name=condition.api_name)
        operator = condition.operator
        if operator not in OPERATORS:
            raise CriteriaError("invalid operator", operator=operator)
        kind = field.data_type
        ordered_type = kind in NUMBER_TYPES or kind == "datetime"
        if (operator in _ORDERED and not ordered_type) or (
            operator == "starts_with" and kind not in TEXT_TYPES
        ):
            raise CriteriaError(
                "operator not supported for the field", api_name=field.api_name, operator=operator
            )
        values = [_coerce(field, value) for value in condition.values]
        if operator == "between" and len(values) != 2:
            raise CriteriaError("between needs two values", api_name=field.api_name)
        if operator not in {"in", "not_in", "between"} and len(values) != 1:
            raise CriteriaError(
                "unescaped ',' in a value; escape it as \\,", api_name=field.api_name
            )
        return _predicate(field, operator, values)


def _split_condition(raw: list[str]) -> _Condition:
    parts: list[list[str]] = [[]]
    for piece in raw:
        if piece == ":" and len(parts) < 3:
            parts.append([])
        else:
            parts[-1].append(piece)
    if len(parts) != 3:
        raise CriteriaError("a criterion needs {api_name}:{operator}:{value}")
    api_name = "".join(parts[0]).strip()
    operator = "".join(parts[1]).strip().lower()
    values: list[str] = [""]
    for piece in parts[2]:
        if piece == ",":
            values.append("")
        elif piece.startswith("\\") and len(piece) == 2:
            values[-1] += piece[1]
        else:
            values[-1] += piece
    return _Condition(api_name, operator, values)


def _coerce(field: FieldDef, value: str) -> Any:
    kind = field.data_type
    if kind in NUMBER_TYPES:
        try:
            return float(value)
        except ValueError:
            raise CriteriaError(
                "invalid value for a number field", api_name=field.api_name
            ) from None
    if kind == "datetime":
        moment = parse_datetime(value)
        if moment is None:
            raise CriteriaError("invalid value for a datetime field", api_name=field.api_name)
        return moment
    if kind == "boolean":
        if value.lower() not in {"true", "false"}:
            raise CriteriaError("invalid value for a boolean field", api_name=field.api_name)
        return value.lower() == "true"
    return value.strip().lower()


def _normal(field: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if field.data_type in NUMBER_TYPES:
        return float(value)
    if isinstance(value, datetime | bool):
        return value
    return str(value).strip().lower()


def _predicate(field: FieldDef, operator: str, values: list[Any]) -> Predicate:
    def test(record: StoredRecord) -> bool:
        actual = _normal(field, _comparable(record, field))
        if operator == "equals":
            return bool(actual == values[0])
        if operator == "not_equal":
            return bool(actual != values[0])
        if operator == "in":
            return actual in values
        if operator == "not_in":
            return actual not in values
        if actual is None:
            return False
        if operator == "starts_with":
            return str(actual).startswith(str(values[0]))
        if operator == "greater_than":
            return bool(actual > values[0])
        if operator == "greater_equal":
            return bool(actual >= values[0])
        if operator == "less_than":
            return bool(actual < values[0])
        if operator == "less_equal":
            return bool(actual <= values[0])
        return bool(values[0] <= actual <= values[1])

    return test


def parse_criteria(text: str, fields: dict[str, FieldDef]) -> Predicate:
    """Parse ``criteria`` against the module's fields; raise :class:`CriteriaError`."""
    return _Parser(text, fields).parse()
