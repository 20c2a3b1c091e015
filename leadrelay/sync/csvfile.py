"""Streaming reader for lead lists in CSV files (imports and ``leadrelay dedupe``).

Bad input never crashes the reader and is never dropped silently. A problem with the whole file
(empty, binary, a required column missing, two columns naming one field) raises :class:`CsvError`
before any row is read. A problem with one row (too few or too many cells, a field over the size
limit, a line the csv parser cannot read) yields a :class:`SkippedRow` naming the row and the
reason, and reading goes on. Blank rows are skipped and counted.

Rows are numbered 1-based with the header excluded, counting blank rows, so that row ``n`` is the
``n``-th line under the header in a spreadsheet even when quoted fields span several lines.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, cast

from leadrelay.model import Lead

#: Default largest field accepted in a row; a bigger one gets the row skipped.
DEFAULT_MAX_FIELD_BYTES = 1024 * 1024

#: Bound given to the csv parser (characters per field). The stdlib default of 128 KiB would turn
#: a long-but-legal field into a parser error; a bound keeps a stray quote that swallows the rest
#: of the file from reading it all into memory.
PARSER_FIELD_LIMIT = 16 * 1024 * 1024

_SCAN_CHUNK = 256 * 1024
_DELIMITERS = (",", ";", "\t", "|")
#: Lead fields a flat CSV cell can carry (nested and dict fields are left out).
LEAD_COLUMNS: frozenset[str] = frozenset(Lead.model_fields) - {
    "external_ids",
    "click_ids",
    "first_touch",
    "score_breakdown",
    "owner",
    "updated_at",
    "custom",
    "intent_signals",
}


class CsvError(ValueError):
    """The file as a whole cannot be read as a lead list; the message says why."""


class LeadRow(NamedTuple):
    """One data row: its number (1-based, header excluded) and its values by Lead field name."""

    row_number: int
    values: dict[str, str]


class SkippedRow(NamedTuple):
    """A row that was not read, with its number (1-based, header excluded) and the reason."""

    row_number: int
    reason: str


RowResult = LeadRow | SkippedRow


class CellRow(NamedTuple):
    """One data row as its cells in the order of :attr:`LeadCsv.fields` (1-based number)."""

    row_number: int
    cells: tuple[str, ...]


CellResult = CellRow | SkippedRow


def header_to_field(header: str) -> str:
    """The Lead field name a CSV header spells (trimmed, case-insensitive, ``First Name`` ok)."""
    return "_".join(header.strip().casefold().replace("-", " ").split())


def detect_encoding(path: str | PathLike[str]) -> str:
    """The text encoding of a whole file, or :class:`CsvError` when it cannot be told cleanly.

    A BOM names UTF-8 or UTF-16. Otherwise the whole file is checked as UTF-8 in chunks
    (constant memory), so a stray byte deep in a large file is found before any row is read.
    A file that is UTF-8 in places but has a byte that is not is refused, naming the line and
    the byte: reading it in another encoding would turn every accented letter into mojibake
    (``ZoÃ«``). A file with no UTF-8 in it is a legacy export: charset-normalizer weighs every
    line holding a non-ASCII byte and names the code pages it reads cleanly. When they all read
    the file alike, that is its encoding (and the whole file must decode in it); when they read
    a byte differently (0xF1 is ``ñ`` in cp1252 and ``ń`` in cp1250, and a short list does not
    tell them apart), the file is refused naming the line, the byte and the readings, so the
    user names the encoding instead of a CRM receiving the wrong letters.
    """
    name = Path(path).name
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        handle.seek(0)
        if _decodes(handle, "utf-8"):
            return "utf-8"
        handle.seek(0)
        scan = _scan_non_utf8(handle)
    if scan.utf8_lines:
        raise CsvError(
            f"{name} is not valid UTF-8: {scan.first_error}, while other lines are UTF-8 "
            "(the file mixes encodings); fix that line, or give the file's encoding "
            "(--encoding) to read all of it in one"
        )
    encoding = _legacy_encoding(name, scan)
    check_decodes(path, encoding)
    return encoding


def check_decodes(path: str | PathLike[str], encoding: str) -> None:
    """Raise :class:`CsvError` naming the line and byte where ``path`` stops decoding cleanly
    in ``encoding`` (an unknown encoding name is a :class:`CsvError` too)."""
    name = Path(path).name
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise CsvError(f"unknown text encoding {encoding!r}") from None
    if codecs.lookup(encoding).name.startswith("utf-16"):
        with open(path, "rb") as handle:
            if not _decodes(handle, encoding):
                raise CsvError(f"{name} does not decode as {encoding}")
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as exc:
                where = _describe_byte(number, line, exc.start)
                raise CsvError(f"{name} does not decode as {encoding}: {where}") from None


class _Scan(NamedTuple):
    first_error: str
    utf8_lines: int
    #: (line number, bytes) of the lines that are not UTF-8: the ones that tell encodings apart
    sample: list[tuple[int, bytes]]


#: Bytes of non-UTF-8 lines handed to charset-normalizer (spread over the whole file).
_SAMPLE_BYTES = 512 * 1024

#: The single-byte code pages lead lists are exported in (spreadsheets and CRMs on Windows).
_EXPORT_ENCODINGS = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257")

#: How much messier than the cleanest reading a code page may read and still be a candidate.
_CHAOS_MARGIN = 0.2


def _scan_non_utf8(handle: IO[bytes]) -> _Scan:
    """Line by line: the first byte that is not UTF-8, how many non-ASCII lines are valid
    UTF-8, and the lines that are not."""
    first_error = ""
    utf8_lines = 0
    sample: list[tuple[int, bytes]] = []
    sampled = 0
    for number, line in enumerate(handle, start=1):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not first_error:
                first_error = _describe_byte(number, line, exc.start)
            if sampled < _SAMPLE_BYTES:
                sample.append((number, line))
                sampled += len(line)
        else:
            utf8_lines += 1
    return _Scan(first_error, utf8_lines, sample)


def _describe_byte(number: int, line: bytes, index: int) -> str:
    context = line[max(0, index - 20) : index + 20].decode("ascii", "backslashreplace")
    return f'line {number}, byte {index + 1} (0x{line[index]:02X}) in "{context.strip()}"'


def _legacy_encoding(name: str, scan: _Scan) -> str:
    """The code page of a file with no UTF-8 in it, when its candidates all read it alike."""
    from charset_normalizer import from_bytes

    sample = b"".join(line for _, line in scan.sample)
    matches = list(from_bytes(sample))
    cleanest = min((match.chaos for match in matches), default=0.0)
    candidates = [
        encoding
        for encoding in _EXPORT_ENCODINGS
        if any(
            match.chaos <= cleanest + _CHAOS_MARGIN and encoding in match.could_be_from_charset
            for match in matches
        )
        and _decodes_bytes(sample, encoding)
    ]
    if not candidates:  # too little text for charset-normalizer: every code page that decodes
        candidates = [e for e in _EXPORT_ENCODINGS if _decodes_bytes(sample, e)]
    if not candidates:
        raise CsvError(
            f"{name}: cannot tell the file's text encoding ({scan.first_error}); "
            "give it with --encoding, or save the file as UTF-8"
        )
    for number, line in scan.sample:
        readings = {encoding: line.decode(encoding) for encoding in candidates}
        if len(set(readings.values())) > 1:
            where = _ambiguity(number, line, readings)
            raise CsvError(f"{name}: cannot tell the file's text encoding: {where}")
    return candidates[0]


def _decodes_bytes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _ambiguity(number: int, line: bytes, readings: dict[str, str]) -> str:
    """Where and how the candidate code pages read a line differently (they are single-byte:
    character n is byte n)."""
    index = next(i for i in range(len(line)) if len({text[i] for text in readings.values()}) > 1)
    by_text: dict[str, list[str]] = {}
    for encoding, text in readings.items():
        by_text.setdefault(text[index], []).append(encoding)
    read_as = ", ".join(f"{char!r} in {'/'.join(encs)}" for char, encs in by_text.items())
    return (
        f"{_describe_byte(number, line, index)} reads {read_as}; give the file's encoding "
        f"(e.g. --encoding {next(iter(readings))}), or save the file as UTF-8"
    )


def _decodes(handle: IO[bytes], encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        while chunk := handle.read(_SCAN_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _pick_delimiter(first_line: str) -> str:
    """The delimiter under which the header line names the most Lead fields (comma on a tie)."""
    best, best_known = ",", -1
    for delimiter in _DELIMITERS:
        cells = next(csv.reader([first_line], delimiter=delimiter), [])
        known = sum(1 for cell in cells if header_to_field(cell) in LEAD_COLUMNS)
        if known > best_known:
            best, best_known = delimiter, known
    return best


def _picker(positions: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """A function taking the cells at ``positions`` (in that order) from a row, as a tuple."""
    if not positions:
        return lambda cells: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda cells: (cells[only],)
    return cast("Callable[[list[str]], tuple[str, ...]]", itemgetter(*positions))


class LeadCsv:
    """A lead CSV opened for streaming; iterate it for :data:`RowResult` items.

    Opening checks the whole file (encoding, header, required columns) and raises
    :class:`CsvError` when it cannot be read. ``encoding`` names the file's encoding instead of
    detecting it; the file must still decode cleanly in it. After iteration, ``rows_read``,
    ``rows_skipped`` and ``blank_rows`` count what happened; ``encoding``, ``delimiter``,
    ``columns`` (header to Lead field) and ``unknown_headers`` (ignored columns) describe it.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        required: Sequence[str] = ("email",),
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        extra_columns: Sequence[str] = (),
        encoding: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._known = LEAD_COLUMNS | frozenset(extra_columns)
        self.max_field_bytes = max_field_bytes
        self.rows_read = 0
        self.rows_skipped = 0
        self.blank_rows = 0
        self._check_bytes()
        if encoding is None:
            self.encoding = detect_encoding(self.path)
        else:
            check_decodes(self.path, encoding)
            self.encoding = encoding
        # Only ever raised, never lowered: other readers in this process keep a bound they set.
        csv.field_size_limit(max(csv.field_size_limit(), PARSER_FIELD_LIMIT, max_field_bytes + 1))
        self._handle: IO[str] = open(self.path, encoding=self.encoding, newline="")  # noqa: SIM115
        try:
            self._open_header(required)
        except BaseException:
            self._handle.close()
            raise

    def _check_bytes(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                prefix = handle.read(64 * 1024)
        except OSError as exc:
            raise CsvError(f"cannot open {self.path.name}: {exc.strerror or exc}") from None
        if not prefix.strip():
            raise CsvError(f"{self.path.name} is empty: no header row")
        utf16 = prefix.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        if not utf16 and b"\x00" in prefix:
            offset = prefix.index(b"\x00")
            raise CsvError(
                f"{self.path.name} is not a CSV: binary content (a NUL byte at offset {offset})"
            )

    def _open_header(self, required: Sequence[str]) -> None:
        first_line = ""
        self._line_offset = 0
        while not first_line.strip():
            first_line = self._handle.readline()
            self._line_offset += 1
            if not first_line:
                raise CsvError(f"{self.path.name} is empty: no header row")
        self.delimiter = _pick_delimiter(first_line)
        try:
            header = next(csv.reader([first_line], delimiter=self.delimiter))
        except csv.Error as exc:
            raise CsvError(f"{self.path.name}: the header row cannot be read: {exc}") from None
        self.headers = [cell.strip() for cell in header]
        self.columns: dict[str, str] = {}
        self.unknown_headers: list[str] = []
        self._positions: list[tuple[int, str]] = []
        for position, cell in enumerate(self.headers):
            field = header_to_field(cell)
            if field not in self._known:
                if cell:
                    self.unknown_headers.append(cell)
                continue
            clash = next((h for h, f in self.columns.items() if f == field), None)
            if clash is not None:
                raise CsvError(
                    f"{self.path.name}: columns {clash!r} and {cell!r} both name the Lead field "
                    f"{field!r}"
                )
            self.columns[cell] = field
            self._positions.append((position, field))
        present = set(self.columns.values())
        missing = [name for name in required if name not in present]
        if missing:
            found = ", ".join(repr(h) for h in self.headers) or "none"
            raise CsvError(
                f"{self.path.name}: missing required column {', '.join(map(repr, missing))}; "
                f"headers found: {found}"
            )
        self._reader = csv.reader(self._handle, delimiter=self.delimiter, strict=True)

    @property
    def fields(self) -> list[str]:
        """The Lead field names of the columns read, in the order of a :class:`CellRow`."""
        return [field for _, field in self._positions]

    def __iter__(self) -> Iterator[RowResult]:
        fields = self.fields
        for item in self._rows():
            if isinstance(item, SkippedRow):
                yield item
            else:
                yield LeadRow(item.row_number, dict(zip(fields, item.cells, strict=True)))

    def cell_rows(self) -> Iterator[CellResult]:
        """Iterate the rows as :class:`CellRow` items (cells in the order of :attr:`fields`)
        instead of dicts: the same rows, numbers, skips and counts as iterating the file,
        cheaper to hand to another process."""
        return self._rows()

    def _rows(self) -> Iterator[CellResult]:
        width = len(self.headers)
        limit = self.max_field_bytes
        # a str of n characters is at most 4n bytes in UTF-8: only long ones need encoding
        cheap = limit // 4
        row_number = 0
        reader = self._reader
        pick = _picker([position for position, _ in self._positions])
        while True:
            row_number += 1
            first_line = self._line_offset + reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self.rows_skipped += 1
                last_line = self._line_offset + reader.line_num
                yield SkippedRow(
                    row_number,
                    f"unreadable row at lines {first_line}-{last_line} of the file "
                    f"(a stray quote?): {exc}",
                )
                continue
            # one join instead of a strip per cell: blank when no cell holds a non-space
            if not cells or not "".join(cells).strip():
                self.blank_rows += 1
                continue
            if len(cells) != width and not (
                len(cells) > width and not any(c.strip() for c in cells[width:])
            ):
                self.rows_skipped += 1
                lines = (
                    f" (one row over lines {first_line}-{last_line} of the file: a stray quote?)"
                    if (last_line := self._line_offset + reader.line_num) > first_line
                    else ""
                )
                yield SkippedRow(
                    row_number, f"row has {len(cells)} cells, the header has {width}{lines}"
                )
                continue
            oversized = (
                next(
                    (
                        (position, size)
                        for position, cell in enumerate(cells[:width])
                        if len(cell) > cheap and (size := len(cell.encode("utf-8"))) > limit
                    ),
                    None,
                )
                if max(map(len, cells)) > cheap
                else None
            )
            if oversized is not None:
                position, size = oversized
                self.rows_skipped += 1
                yield SkippedRow(
                    row_number,
                    f"field {self.headers[position]!r} is {size:,} bytes, "
                    f"over the {limit:,} byte limit",
                )
                continue
            self.rows_read += 1
            yield CellRow(row_number, pick(cells))

    def close(self) -> None:
        """Close the underlying file."""
        self._handle.close()

    def __enter__(self) -> LeadCsv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_lead_rows(
    path: str | PathLike[str],
    *,
    required: Sequence[str] = ("email",),
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    extra_columns: Sequence[str] = (),
    encoding: str | None = None,
) -> Iterator[RowResult]:
    """Stream the rows of a lead CSV as :class:`LeadRow` or :class:`SkippedRow` items.

    ``extra_columns`` are kept next to the Lead fields (e.g. ``page_url`` for attribution).
    Raises :class:`CsvError` (on the first ``next``) when the file as a whole cannot be read.
    Use :class:`LeadCsv` directly to see the encoding, ignored headers and counts.
    """
    with LeadCsv(
        path,
        required=required,
        max_field_bytes=max_field_bytes,
        extra_columns=extra_columns,
        encoding=encoding,
    ) as lead_csv:
        yield from lead_csv
