"""Named, typed value transforms for mapping files (no expression language).

A mapping field names transforms by name (``transform = "lower"`` or a list, in reading order);
each transform has an *inbound* function (system → Lead) and an *outbound* function
(Lead → system) and a pydantic model of its ``args``, validated when the mapping loads.

A transform reports a value it cannot handle by raising :class:`ValueError` with the reason;
the engine turns that into a problem naming the record and the field, so one bad value
dead-letters one record, never the batch.

Built-in transforms (``args`` in brackets):

=================  ==========================================================================
name               inbound (system → Lead) / outbound (Lead → system)
=================  ==========================================================================
split_full_name    ``[part = "first"|"last"]`` the part of a full name ("Ana Silva",
                   "Silva, Ana", "Ana" → last name) / first and last name joined
join               ``[fields, separator = " "]`` this field's piece of the value split into
                   ``fields`` / the non-blank Lead ``fields`` joined
default            ``[value]`` blank → ``value``, both ways
lower, upper,      text case-folded / stripped, both ways
strip
truncate           ``[max_length, url = false]`` text as read / text cut to ``max_length``
                   characters (a ``url`` first loses its query and fragment; lossy)
e164               phone to E.164 using the record's country (``[country]`` as fallback)
date, datetime     ``[format = "iso"|"epoch_ms"|"salesforce"|"zoho"|"strftime:%d/%m/%Y"]``
                   text or number → aware datetime (UTC when naive) / formatted
bool               true/false, yes/no, 1/0, on/off, checked → bool
                   ``[true_value, false_value, invert]`` / bool or the given values
int, float         number or numeric text ("1,200") → number / number
employee_range     a range label ("25-50", "1,001-5,000", "10001+", LinkedIn's
                   "SIZE_51_TO_200") → its lower bound / the range holding a count
                   (``[ranges]``, default HubSpot's ``numemployees``; lossy: 30 → "25-50" → 25)
hubspot_source     ``hs_analytics_source`` → channel / channel → source (lossy for display
                   and affiliate, which HubSpot files under OTHER_CAMPAIGNS)
zoho_lookup_id     Zoho lookup ``{id, name, email}`` → owner / id → ``{"id": id}``
multi_select       ``[separator = ";"]`` "a;b" → ["a", "b"] / list → "a;b"
picklist           ``[list = "industry"|"salutation", system]`` the system's standard value
                   (or label, or any system's) → canonical value / canonical → the system's
                   value (left out when its list has none); a value no map covers raises
                   :class:`UnmappedValue`: kept in ``custom["<field>_raw"]`` and reported
country            ``[write = "code"|"name"]`` code or name → ISO 3166-1 alpha-2 / the code or
                   the country's name (unknown text: :class:`UnmappedValue`)
region             ``[write = "code"|"name"]`` name or code → ISO 3166-2 within the record's
                   country (other text kept) / "US-CA" → "CA" or "California"
=================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from leadrelay.model import Channel, normalize_phone
from leadrelay.sync.tagging import (
    HUBSPOT_SOURCE_BY_CHANNEL,
    channel_to_hubspot_source,
    hubspot_source_to_channel,
)
from leadrelay.taxonomy import standard_list
from leadrelay.taxonomy.geo import country_code, country_name, region_code, region_name

__all__ = [
    "HUBSPOT_EMPLOYEE_RANGES",
    "REGISTRY",
    "BoundTransform",
    "NoArgs",
    "Transform",
    "TransformArgsError",
    "TransformContext",
    "UnmappedValue",
    "bind",
    "is_blank",
    "transform",
]

#: HubSpot's default ``numemployees`` options, in order.
HUBSPOT_EMPLOYEE_RANGES: tuple[str, ...] = (
    "1-5",
    "5-25",
    "25-50",
    "50-100",
    "100-500",
    "500-1000",
    "1000+",
)


def is_blank(value: object) -> bool:
    """None, an empty or whitespace-only string, or an empty list / dict."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | dict | set):
        return len(value) == 0
    return False


@dataclass(frozen=True)
class TransformContext:
    """What a transform may know besides the value.

    Attributes:
        field: the canonical field being mapped (``first_name``, ``custom.segment``).
        system_field: the system field it is read from or written to.
        canonical: the value of another canonical field of the same record (inbound: mapped
            from the raw record; outbound: read from the Lead), or None.
    """

    field: str
    system_field: str | None = None
    canonical: Callable[[str], Any] = dataclasses.field(default=lambda _name: None)


class NoArgs(BaseModel):
    """A transform without arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)


A = TypeVar("A", bound=BaseModel)


@dataclass(frozen=True)
class Transform(Generic[A]):
    """A registered transform: its name, args model and both directions.

    ``on_blank`` transforms also see blank values (``default``); the others are skipped for
    blanks. ``system_values`` lists the system values a transform can write (checked against
    picklists by ``leadrelay check``).
    """

    name: str
    args_model: type[A]
    inbound: Callable[[Any, A, TransformContext], Any]
    outbound: Callable[[Any, A, TransformContext], Any]
    description: str
    on_blank: bool = False
    system_values: Callable[[A], frozenset[str]] | None = None

    def parse_args(self, raw: Mapping[str, Any]) -> A:
        """The args validated; :class:`TransformArgsError` names each bad one."""
        try:
            return self.args_model.model_validate(dict(raw))
        except ValidationError as exc:
            reasons = [
                f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}"
                for err in exc.errors()
            ]
            raise TransformArgsError(self.name, reasons) from None


class TransformArgsError(ValueError):
    """A transform's ``args`` do not fit its model."""

    def __init__(self, name: str, reasons: list[str]) -> None:
        self.name = name
        self.reasons = reasons
        super().__init__(f"bad args for transform {name!r}: " + "; ".join(reasons))


#: Every known transform by name.
REGISTRY: dict[str, Transform[Any]] = {}


def transform(
    name: str,
    args_model: type[BaseModel] = NoArgs,
    *,
    on_blank: bool = False,
    system_values: Callable[[Any], frozenset[str]] | None = None,
) -> Callable[[type[Any]], type[Any]]:
    """Register the decorated class's ``inbound`` / ``outbound`` static methods as ``name``."""

    def register(cls: type[Any]) -> type[Any]:
        if name in REGISTRY:
            raise ValueError(f"transform {name!r} is registered twice")
        REGISTRY[name] = Transform(
            name=name,
            args_model=args_model,
            inbound=cls.inbound,
            outbound=cls.outbound,
            description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            on_blank=on_blank,
            system_values=system_values,
        )
        return cls

    return register


@dataclass(frozen=True)
class BoundTransform:
    """A transform with its validated args, as a mapping field uses it."""

    transform: Transform[Any]
    args: BaseModel

    @property
    def name(self) -> str:
        """The transform's registered name."""
        return self.transform.name

    def inbound(self, value: Any, ctx: TransformContext) -> Any:
        """System value → Lead value (blank values pass unless the transform wants them)."""
        if is_blank(value) and not self.transform.on_blank:
            return None
        return self.transform.inbound(value, self.args, ctx)

    def outbound(self, value: Any, ctx: TransformContext) -> Any:
        """Lead value → system value (blank values pass unless the transform wants them)."""
        if is_blank(value) and not self.transform.on_blank:
            return value
        return self.transform.outbound(value, self.args, ctx)

    def system_values(self) -> frozenset[str] | None:
        """The system values this transform can write, when it knows them."""
        if self.transform.system_values is None:
            return None
        return self.transform.system_values(self.args)


def bind(name: str, args: Mapping[str, Any] | None = None) -> BoundTransform:
    """Look up ``name`` and validate ``args``; KeyError / TransformArgsError otherwise."""
    found = REGISTRY.get(name)
    if found is None:
        raise KeyError(name)
    return BoundTransform(found, found.parse_args(args or {}))


def _text(value: Any, what: str = "text") -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise ValueError(f"expected {what}, got {type(value).__name__}")


# --- names --------------------------------------------------------------------------------------


class SplitNameArgs(BaseModel):
    """Which part of the full name this field takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: Literal["first", "last"]


def split_full_name(full: str) -> tuple[str | None, str | None]:
    """First and last name of a full name, as a best effort.

    "Ana Silva" → (Ana, Silva); "Silva, Ana" → (Ana, Silva); "Ana Maria da Silva" →
    (Ana Maria, da Silva) when a lower-case particle starts the last name, else the last word
    is the last name; a single word is the last name (CRMs require a last name, not a first).
    """
    text = " ".join(full.split())
    if not text:
        return None, None
    if "," in text:
        last, _, first = text.partition(",")
        return first.strip() or None, last.strip() or None
    words = text.split(" ")
    if len(words) == 1:
        return None, words[0]
    split_at = len(words) - 1
    for index in range(1, len(words) - 1):
        if words[index] in _NAME_PARTICLES:
            split_at = index
            break
    return " ".join(words[:split_at]), " ".join(words[split_at:])


_NAME_PARTICLES = frozenset(
    {"da", "de", "del", "della", "der", "di", "do", "dos", "das", "du", "la", "le", "van", "von"}
)


def _full_name(ctx: TransformContext) -> str | None:
    parts = [ctx.canonical("first_name"), ctx.canonical("last_name")]
    text = " ".join(str(p) for p in parts if not is_blank(p))
    return text or None


@transform("split_full_name", SplitNameArgs)
class _SplitFullName:
    """Full name → first or last name; first and last name → full name."""

    @staticmethod
    def inbound(value: Any, args: SplitNameArgs, ctx: TransformContext) -> Any:
        first, last = split_full_name(_text(value, "a name"))
        return first if args.part == "first" else last

    @staticmethod
    def outbound(value: Any, args: SplitNameArgs, ctx: TransformContext) -> Any:
        return _full_name(ctx)


class JoinArgs(BaseModel):
    """The canonical fields joined into one system field, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] = Field(min_length=1)
    separator: str = Field(default=" ", min_length=1)


@transform("join", JoinArgs)
class _Join:
    """Lead fields joined with a separator; read back split into the same fields."""

    @staticmethod
    def inbound(value: Any, args: JoinArgs, ctx: TransformContext) -> Any:
        if ctx.field not in args.fields:
            raise ValueError(f"join.fields {args.fields} does not include {ctx.field!r}")
        pieces = _text(value).split(args.separator, len(args.fields) - 1)
        index = args.fields.index(ctx.field)
        return pieces[index].strip() or None if index < len(pieces) else None

    @staticmethod
    def outbound(value: Any, args: JoinArgs, ctx: TransformContext) -> Any:
        values = [ctx.canonical(name) for name in args.fields]
        return args.separator.join(_text(v) for v in values if not is_blank(v)) or None


# --- simple text ------------------------------------------------------------------------------


class DefaultArgs(BaseModel):
    """The value used when the field is blank."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str | int | float | bool


@transform("default", DefaultArgs, on_blank=True)
class _Default:
    """A blank value becomes ``value``, in both directions."""

    @staticmethod
    def inbound(value: Any, args: DefaultArgs, ctx: TransformContext) -> Any:
        return args.value if is_blank(value) else value

    @staticmethod
    def outbound(value: Any, args: DefaultArgs, ctx: TransformContext) -> Any:
        return args.value if is_blank(value) else value


@transform("lower")
class _Lower:
    """Lower-cased text, both ways."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).lower()

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).lower()


@transform("upper")
class _Upper:
    """Upper-cased text, both ways."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).upper()

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).upper()


@transform("strip")
class _Strip:
    """Surrounding whitespace removed, both ways."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).strip() or None

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _text(value).strip() or None


class TruncateArgs(BaseModel):
    """The longest value the system field holds; whether the value is a URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(ge=1)
    url: bool = False


def _shorten_url(text: str, limit: int) -> str:
    """A URL over ``limit`` without its fragment, then without its query string."""
    for mark in ("#", "?"):
        if len(text) <= limit:
            break
        text = text.partition(mark)[0]
    return text


@transform("truncate", TruncateArgs)
class _Truncate:
    """Text cut to the system field's length when written (read back as stored)."""

    @staticmethod
    def inbound(value: Any, args: TruncateArgs, ctx: TransformContext) -> Any:
        return _text(value)

    @staticmethod
    def outbound(value: Any, args: TruncateArgs, ctx: TransformContext) -> Any:
        text = _text(value)
        if args.url:
            text = _shorten_url(text, args.max_length)
        return text[: args.max_length]


class E164Args(BaseModel):
    """Default region for numbers without a country code, when the record has no country."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country: str | None = Field(default=None, min_length=2, max_length=2)


def _e164(value: Any, args: E164Args, ctx: TransformContext) -> str:
    country = ctx.canonical("country")
    region = country if isinstance(country, str) and country.strip() else args.country
    return normalize_phone(_text(value, "a phone number"), region)


@transform("e164", E164Args)
class _E164:
    """Phone number in E.164, parsed with the record's country as the default region."""

    inbound = staticmethod(_e164)
    outbound = staticmethod(_e164)


# --- dates --------------------------------------------------------------------------------------


class DateArgs(BaseModel):
    """``iso``, ``epoch_ms`` (HubSpot), ``salesforce``, ``zoho`` or ``strftime:<pattern>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = "iso"

    @field_validator("format")
    @classmethod
    def _known(cls, value: str) -> str:
        if value in ("iso", "epoch_ms", "salesforce", "zoho"):
            return value
        if value.startswith("strftime:") and len(value) > len("strftime:"):
            return value
        raise ValueError("format must be iso, epoch_ms, salesforce, zoho or strftime:<pattern>")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_moment(value: Any, fmt: str) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if fmt == "epoch_ms" or (isinstance(value, int | float) and not isinstance(value, bool)):
        try:
            millis = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not epoch milliseconds") from None
        if math.isnan(millis) or math.isinf(millis):
            raise ValueError(f"{value!r} is not epoch milliseconds")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    text = _text(value, "a date").strip()
    if fmt.startswith("strftime:"):
        try:
            return _aware(datetime.strptime(text, fmt[len("strftime:") :]))
        except ValueError:
            raise ValueError(f"{text!r} does not match {fmt[len('strftime:') :]!r}") from None
    # Salesforce writes "+0000" offsets; fromisoformat (3.11) reads them, and "Z" too.
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date") from None


def _format_moment(moment: datetime, fmt: str, *, date_only: bool) -> Any:
    moment = _aware(moment)
    if fmt == "epoch_ms":
        if date_only:
            # HubSpot date properties take midnight UTC of the day, in ms.
            moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if fmt.startswith("strftime:"):
        return moment.strftime(fmt[len("strftime:") :])
    if date_only:
        return moment.date().isoformat()
    if fmt == "salesforce":
        utc = moment.astimezone(UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"
    if fmt == "zoho":
        return moment.replace(microsecond=0).isoformat()
    return moment.isoformat()


def _as_moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return _parse_moment(value, "iso")
    raise ValueError(f"expected a date or datetime, got {type(value).__name__}")


@transform("datetime", DateArgs)
class _DateTime:
    """A date-time in the given format ↔ an aware datetime (UTC when the system gives none)."""

    @staticmethod
    def inbound(value: Any, args: DateArgs, ctx: TransformContext) -> Any:
        return _parse_moment(value, args.format)

    @staticmethod
    def outbound(value: Any, args: DateArgs, ctx: TransformContext) -> Any:
        return _format_moment(_as_moment(value), args.format, date_only=False)


@transform("date", DateArgs)
class _Date:
    """A date in the given format ↔ midnight UTC of that day."""

    @staticmethod
    def inbound(value: Any, args: DateArgs, ctx: TransformContext) -> Any:
        moment = _parse_moment(value, args.format)
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)

    @staticmethod
    def outbound(value: Any, args: DateArgs, ctx: TransformContext) -> Any:
        return _format_moment(_as_moment(value), args.format, date_only=True)


# --- scalars ------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on", "checked", "x"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off", "unchecked"})


class BoolArgs(BaseModel):
    """What to write for true / false (default: a JSON boolean); ``invert`` for opt-outs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    true_value: str | int | bool = True
    false_value: str | int | bool = False
    invert: bool = False


def parse_bool(value: Any) -> bool:
    """True/false from a bool, 1/0 or text (true/false, yes/no, on/off, checked)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{value!r} is not a yes/no value")


@transform("bool", BoolArgs)
class _Bool:
    """Yes/no text, 1/0 or a checkbox "on" ↔ bool (``invert`` for opt-out fields)."""

    @staticmethod
    def inbound(value: Any, args: BoolArgs, ctx: TransformContext) -> Any:
        if value == args.true_value and not isinstance(value, bool):
            result = True
        elif value == args.false_value and not isinstance(value, bool):
            result = False
        else:
            result = parse_bool(value)
        return result != args.invert

    @staticmethod
    def outbound(value: Any, args: BoolArgs, ctx: TransformContext) -> Any:
        result = parse_bool(value) != args.invert
        return args.true_value if result else args.false_value


_NUMBER_RE = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = _text(value, "a number").strip().replace(" ", "")
        if not text or not _NUMBER_RE.match(text) or text in ("+", "-", "."):
            raise ValueError(f"{value!r} is not a number")
        number = float(text.replace(",", ""))
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _integer(value: Any) -> int:
    number = _number(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


@transform("int")
class _Int:
    """Whole number from a number or numeric text ("1,200"), both ways."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _integer(value)

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _integer(value)


@transform("float")
class _Float:
    """Number from a number or numeric text, both ways."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _number(value)

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return _number(value)


# --- system-specific ----------------------------------------------------------------------------


class EmployeeRangeArgs(BaseModel):
    """The range options, in ascending order ("1-5", …, "1000+")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ranges: list[str] = Field(default_factory=lambda: list(HUBSPOT_EMPLOYEE_RANGES), min_length=1)

    @field_validator("ranges")
    @classmethod
    def _parse(cls, ranges: list[str]) -> list[str]:
        lows = [_range_bounds(r)[0] for r in ranges]
        if lows != sorted(lows):
            raise ValueError("ranges must be in ascending order")
        return ranges


_RANGE_RE = re.compile(r"^\s*(\d[\d,]*)\s*(?:(?:-|–|to)\s*(\d[\d,]*)|\+|\s*or more)?\s*$")


#: LinkedIn's enumerated company sizes ("SIZE_51_TO_200", "SIZE_10001_OR_MORE").
_SIZE_RE = re.compile(r"^\s*SIZE_(\d+)(?:_TO_(\d+)|_OR_MORE)?\s*$", re.IGNORECASE)


def _range_bounds(text: str) -> tuple[int, int | None]:
    size = _SIZE_RE.match(text)
    if size is not None:
        text = size.group(1) + (f"-{size.group(2)}" if size.group(2) else "")
        text += "+" if "MORE" in size.group(0).upper() else ""
    match = _RANGE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an employee range like '25-50' or '1000+'")
    low = int(match.group(1).replace(",", ""))
    high = int(match.group(2).replace(",", "")) if match.group(2) else None
    if high is None and "+" not in text and "more" not in text:
        high = low
    return low, high


@transform(
    "employee_range",
    EmployeeRangeArgs,
    system_values=lambda args: frozenset(args.ranges),
)
class _EmployeeRange:
    """Employee range → its lower bound; a head count → the range holding it (lossy)."""

    @staticmethod
    def inbound(value: Any, args: EmployeeRangeArgs, ctx: TransformContext) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _integer(value)
        return _range_bounds(_text(value, "an employee range"))[0]

    @staticmethod
    def outbound(value: Any, args: EmployeeRangeArgs, ctx: TransformContext) -> Any:
        count = _integer(value)
        if count < 0:
            raise ValueError(f"{count} employees is negative")
        chosen = args.ranges[0]
        # Ranges share their bounds (HubSpot: "1-5", "5-25"): the last one starting at or below
        # the count holds it.
        for option in args.ranges:
            if _range_bounds(option)[0] <= count:
                chosen = option
        return chosen


@transform(
    "hubspot_source",
    system_values=lambda _args: frozenset(HUBSPOT_SOURCE_BY_CHANNEL.values()),
)
class _HubSpotSource:
    """HubSpot ``hs_analytics_source`` ↔ channel (display and affiliate → OTHER_CAMPAIGNS)."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        return hubspot_source_to_channel(_text(value))

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        try:
            channel = Channel(value.value if isinstance(value, Enum) else value)
        except ValueError:
            raise ValueError(f"{value!r} is not a channel") from None
        return channel_to_hubspot_source(channel)


@transform("zoho_lookup_id")
class _ZohoLookupId:
    """Zoho lookup object ``{id, name, email}`` → owner; an id → ``{"id": id}``."""

    @staticmethod
    def inbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return {"id": str(value)}
        if isinstance(value, Mapping) and not is_blank(value.get("id")):
            found = {"id": str(value["id"])}
            for key in ("email", "name"):
                if isinstance(value.get(key), str) and value[key].strip():
                    found[key] = value[key]
            return found
        raise ValueError(f"{value!r} is not a Zoho lookup (an object with an id)")

    @staticmethod
    def outbound(value: Any, args: NoArgs, ctx: TransformContext) -> Any:
        if isinstance(value, Mapping):
            value = value.get("id")
        if is_blank(value):
            raise ValueError("the lookup has no id")
        return {"id": _text(value, "an id")}


class MultiSelectArgs(BaseModel):
    """The separator of the system's multi-select values (HubSpot: ``;``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    separator: str = Field(default=";", min_length=1)


@transform("multi_select", MultiSelectArgs)
class _MultiSelect:
    """``"a;b"`` → ``["a", "b"]``; a list → its items joined."""

    @staticmethod
    def inbound(value: Any, args: MultiSelectArgs, ctx: TransformContext) -> Any:
        if isinstance(value, list | tuple):
            items = [_text(v) for v in value]
        else:
            items = _text(value).split(args.separator)
        return [item.strip() for item in items if item.strip()]

    @staticmethod
    def outbound(value: Any, args: MultiSelectArgs, ctx: TransformContext) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        items = [_text(v) for v in value]
        bad = [item for item in items if args.separator in item]
        if bad:
            raise ValueError(f"{bad[0]!r} contains the separator {args.separator!r}")
        return args.separator.join(items)


# --- standard pick lists (leadrelay.taxonomy) ---------------------------------------------------


class UnmappedValue(ValueError):
    """A system value no standard-list map covers.

    Not a bad record: the mapping engine keeps the value verbatim in ``custom["<field>_raw"]``,
    reports it as a note, and writes the lead without the field.
    """


class PicklistArgs(BaseModel):
    """A standard list of :mod:`leadrelay.taxonomy` and the system whose values are mapped
    (none: a form's free text, read by every system's values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    list: Literal["industry", "salutation"]
    system: str | None = None

    @model_validator(mode="after")
    def _known_system(self) -> PicklistArgs:
        known = standard_list(self.list).systems
        if self.system is not None and self.system not in known:
            raise ValueError(
                f"the {self.list} list has no values for system {self.system!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        return self


def _picklist_values(args: PicklistArgs) -> frozenset[str]:
    if args.system is None:
        return frozenset()
    return frozenset(standard_list(args.list).systems[args.system].write.values())


@transform("picklist", PicklistArgs, system_values=_picklist_values)
class _Picklist:
    """A system's standard pick-list value ↔ the canonical value (``leadrelay.taxonomy``)."""

    @staticmethod
    def inbound(value: Any, args: PicklistArgs, ctx: TransformContext) -> Any:
        text = _text(value, f"a {args.list} value")
        found = standard_list(args.list).canonical(text, args.system)
        if found is None:
            where = f"{args.system}'s " if args.system else ""
            raise UnmappedValue(f"{text!r} is not one of the {where}{args.list} values mapped")
        return found

    @staticmethod
    def outbound(value: Any, args: PicklistArgs, ctx: TransformContext) -> Any:
        canonical = _text(value, f"a {args.list} value")
        if args.system is None:
            return canonical
        standard = standard_list(args.list)
        own = standard.systems.get(args.system)
        if own is None or not own.write:
            # A system leadrelay only reads (an ad platform's form): its forms read the
            # canonical value itself (a synthetic validation lead sends it).
            return canonical
        found = standard.system_value(canonical, args.system)
        if found is None:
            # The system's standard list has no such value: a field problem of this field
            # alone (the lead is written without it, and the problem recorded).
            raise ValueError(f"{args.system} has no {args.list} value for {canonical!r}")
        return found


class GeoArgs(BaseModel):
    """What the system holds: the ISO ``code`` or the English ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    write: Literal["code", "name"] = "code"


@transform("country", GeoArgs)
class _Country:
    """Country code or name → ISO 3166-1 alpha-2 / the code, or the country's name."""

    @staticmethod
    def inbound(value: Any, args: GeoArgs, ctx: TransformContext) -> Any:
        text = _text(value, "a country")
        found = country_code(text)
        if found is None:
            raise UnmappedValue(f"{text!r} is not a country leadrelay knows (ISO 3166-1)")
        return found

    @staticmethod
    def outbound(value: Any, args: GeoArgs, ctx: TransformContext) -> Any:
        code = _text(value, "a country code")
        if args.write == "name":
            return country_name(code) or code
        return code


@transform("region", GeoArgs)
class _Region:
    """State / province → ISO 3166-2 code within the record's country (other text kept) / the
    code's second part (``US-CA`` → ``CA``) or the region's name (``California``)."""

    @staticmethod
    def inbound(value: Any, args: GeoArgs, ctx: TransformContext) -> Any:
        text = " ".join(_text(value, "a region").split())
        country = ctx.canonical("country")
        code = country_code(_text(country)) if country else None
        return region_code(code, text) or text

    @staticmethod
    def outbound(value: Any, args: GeoArgs, ctx: TransformContext) -> Any:
        text = _text(value, "a region")
        name = region_name(text) if "-" in text else None
        if name is None:
            return text
        return name if args.write == "name" else text.partition("-")[2]
