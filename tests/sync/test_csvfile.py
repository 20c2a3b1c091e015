"""Robust lead CSV reading: bad files raise CsvError, bad rows are skipped with a reason."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from leadrelay.sync.csvfile import (
    CellRow,
    CsvError,
    LeadCsv,
    LeadRow,
    SkippedRow,
    detect_encoding,
    read_lead_rows,
)


def write(tmp_path: Path, data: bytes | str, name: str = "leads.csv") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_reads_rows_by_lead_field_name(tmp_path: Path) -> None:
    path = write(tmp_path, "email,first_name\na@acme.io,Ann\nb@acme.io,Bo\n")
    assert list(read_lead_rows(path)) == [
        LeadRow(1, {"email": "a@acme.io", "first_name": "Ann"}),
        LeadRow(2, {"email": "b@acme.io", "first_name": "Bo"}),
    ]


def test_a_single_known_column_is_read_among_unknown_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "id,email,notes\n1,a@acme.io,x\n")
    assert list(read_lead_rows(path)) == [LeadRow(1, {"email": "a@acme.io"})]


def test_no_known_column_reads_each_row_as_empty_values(tmp_path: Path) -> None:
    path = write(tmp_path, "id,notes\n1,x\n")
    assert list(read_lead_rows(path, required=())) == [LeadRow(1, {})]


def test_known_columns_are_read_in_header_order_whatever_their_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "company,id,email\nAcme,1,a@acme.io\n")
    [row] = list(read_lead_rows(path))
    assert isinstance(row, LeadRow)
    assert list(row.values.items()) == [("company", "Acme"), ("email", "a@acme.io")]


def test_missing_required_column_names_it_and_the_headers_found(tmp_path: Path) -> None:
    path = write(tmp_path, "name,phone\nAnn,+14155550100\n")
    with pytest.raises(CsvError, match=r"missing required column 'email'.*'name', 'phone'"):
        list(read_lead_rows(path))


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "is empty"), (b"\n\n  \n", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00", "not a CSV")],
    ids=["empty", "blank-lines", "binary"],
)
def test_unreadable_files_raise_csv_error(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        LeadCsv(write(tmp_path, data))


def test_a_legacy_export_its_code_pages_read_alike_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path, "email,last_name\nm@acme.de,Müller\nj@x.de,Jäger\n".encode("cp1252"))
    with LeadCsv(path) as lead_csv:
        rows = [row.values["last_name"] for row in lead_csv if isinstance(row, LeadRow)]
        assert lead_csv.encoding == "cp1252"
    assert rows == ["Müller", "Jäger"]


@pytest.mark.parametrize(
    ("text", "encoding", "where", "readings"),
    [
        ("a@x.es,Ana,Peña\n", "cp1252", "line 2, byte 14 (0xF1)", "'ñ' in cp1252"),
        ("a@x.pl,Anna,Wiśniewska\n", "cp1250", "line 2, byte 15 (0x9C)", "'ś' in cp1250"),
        ("a@x.tr,Ayşe,Yılmaz\n", "cp1254", "line 2, byte 10 (0xFE)", "'ş' in cp1254"),
        ("i@x.ru,Иван,Петров\n", "cp1251", "line 2, byte 8 (0xC8)", "'И' in cp1251"),
    ],
    ids=["spanish", "polish", "turkish", "russian"],
)
def test_a_legacy_export_its_code_pages_read_differently_is_refused(
    tmp_path: Path, text: str, encoding: str, where: str, readings: str
) -> None:
    path = write(tmp_path, ("email,first_name,last_name\n" + text).encode(encoding))
    with pytest.raises(CsvError) as refused:
        LeadCsv(path)
    message = str(refused.value)
    assert "cannot tell the file's text encoding" in message
    assert where in message and readings in message and "--encoding" in message
    with LeadCsv(path, encoding=encoding) as lead_csv:
        [row] = list(lead_csv)
    assert isinstance(row, LeadRow)
    assert ",".join(row.values.values()) == text.strip()


def test_non_utf8_byte_deep_in_the_file_is_found_before_reading(tmp_path: Path) -> None:
    body = "email,last_name\n" + "a@acme.io,Smith\n" * 200_000 + "m@acme.io,Müller\n"
    assert detect_encoding(write(tmp_path, body.encode("cp1252"))) == "cp1252"


def test_one_bad_byte_in_a_utf8_file_is_refused_naming_line_and_byte(tmp_path: Path) -> None:
    data = "email,first_name,last_name\nana@x.es,Ana,Peña\n".encode() + (
        b"zoe@umbrella.fr,Zo\xeb,M\xc3\xbcller\n"
    )
    with pytest.raises(CsvError, match=r"not valid UTF-8: line 3, byte 19 \(0xEB\)"):
        LeadCsv(write(tmp_path, data), required=())


def test_an_explicit_encoding_reads_a_file_detection_refuses(tmp_path: Path) -> None:
    data = "email,last_name\nana@x.es,Peña\n".encode() + b"zoe@umbrella.fr,Zo\xeb\n"
    with LeadCsv(write(tmp_path, data), encoding="cp1252") as lead_csv:
        assert [row.values["last_name"] for row in lead_csv if isinstance(row, LeadRow)] == [
            "PeÃ±a",
            "Zoë",
        ]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf-8", r"does not decode as utf-8: line 2, byte 12 \(0xFC\)"),
        ("no-such-codec", "unknown text encoding 'no-such-codec'"),
    ],
)
def test_an_explicit_encoding_the_file_does_not_decode_in_is_refused(
    tmp_path: Path, encoding: str, message: str
) -> None:
    path = write(tmp_path, "email,last_name\nm@acme.de,Müller\n".encode("cp1252"))
    with pytest.raises(CsvError, match=message):
        LeadCsv(path, encoding=encoding)


def test_bom_is_not_part_of_the_first_header(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfemail,company\nz@acme.io,Acme\n")
    with LeadCsv(path) as lead_csv:
        assert lead_csv.encoding == "utf-8-sig"
        assert list(lead_csv) == [LeadRow(1, {"email": "z@acme.io", "company": "Acme"})]


def test_utf16_export_with_bom_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "email\tlast_name\nz@acme.io\tØre\n".encode("utf-16"))
    assert list(read_lead_rows(path)) == [LeadRow(1, {"email": "z@acme.io", "last_name": "Øre"})]


def test_blank_rows_are_skipped_counted_and_keep_row_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "\nemail,company\na@acme.io,A\n\n , \nb@acme.io,B\n")
    with LeadCsv(path) as lead_csv:
        rows = list(lead_csv)
        assert lead_csv.blank_rows == 2
    assert [r.row_number for r in rows] == [1, 4]


def test_ten_megabyte_field_skips_its_row_and_reading_goes_on(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    path = write(tmp_path, f"email,company\na@acme.io,{big}\nb@acme.io,B\n")
    rows = list(read_lead_rows(path))
    assert rows == [
        SkippedRow(1, "field 'company' is 10,485,760 bytes, over the 1,048,576 byte limit"),
        LeadRow(2, {"email": "b@acme.io", "company": "B"}),
    ]


def test_field_limit_counts_utf8_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "email,company\na@acme.io," + "é" * 600 + "\n")
    (row,) = read_lead_rows(path, max_field_bytes=1000)
    assert row == SkippedRow(1, "field 'company' is 1,200 bytes, over the 1,000 byte limit")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("c@acme.io", "row has 1 cells, the header has 2"),
        ("c@acme.io,C,extra", "row has 3 cells, the header has 2"),
    ],
    ids=["too-few", "too-many"],
)
def test_ragged_rows_are_skipped_with_the_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, f"email,company\na@acme.io,A\n{line}\nb@acme.io,B\n")
    rows = list(read_lead_rows(path))
    assert rows[1] == SkippedRow(2, reason)
    assert [r.row_number for r in rows if isinstance(r, LeadRow)] == [1, 3]


def test_trailing_empty_cells_are_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path, "email,company\na@acme.io,A,,\n")
    assert list(read_lead_rows(path)) == [LeadRow(1, {"email": "a@acme.io", "company": "A"})]


def test_unterminated_quote_is_reported_with_the_lines_it_spans(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,company\na@acme.io,"Acme\nb@acme.io,B\nc@acme.io,C\n')
    assert list(read_lead_rows(path)) == [
        SkippedRow(
            1,
            "unreadable row at lines 2-4 of the file (a stray quote?): unexpected end of data",
        )
    ]


def test_junk_after_a_closing_quote_skips_only_that_row(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,company\na@acme.io,"Acme"x\nb@acme.io,B\n')
    first, second = read_lead_rows(path)
    assert isinstance(first, SkippedRow)
    assert first.row_number == 1
    assert "lines 2-2" in first.reason
    assert second == LeadRow(2, {"email": "b@acme.io", "company": "B"})


def test_headers_match_case_insensitively_and_unknown_ones_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, " Email ,First Name,LAST-NAME,favourite colour\na@x.io,A,B,red\n")
    with LeadCsv(path) as lead_csv:
        assert lead_csv.columns == {
            "Email": "email",
            "First Name": "first_name",
            "LAST-NAME": "last_name",
        }
        assert lead_csv.unknown_headers == ["favourite colour"]
        assert next(iter(lead_csv)) == LeadRow(
            1,
            {
                "email": "a@x.io",
                "first_name": "A",
                "last_name": "B",
            },
        )


def test_two_columns_naming_one_field_raise(tmp_path: Path) -> None:
    with pytest.raises(
        CsvError, match="columns 'email' and 'EMAIL' both name the Lead field 'email'"
    ):
        LeadCsv(write(tmp_path, "email,EMAIL\na,b\n"))


def test_semicolon_delimited_file_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path, "email;company\na@acme.io;Acme, Inc.\n")
    with LeadCsv(path) as lead_csv:
        assert lead_csv.delimiter == ";"
        assert list(lead_csv) == [LeadRow(1, {"email": "a@acme.io", "company": "Acme, Inc."})]


def test_reading_streams_in_constant_memory(tmp_path: Path) -> None:
    # 100k rows (about 5 MB) must not be held at once; the 1,000,000-row run is in
    # benchmarks/bench_dedupe.py (--csv), too slow for the unit suite.
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("email,first_name,last_name,company\n")
        for n in range(100_000):
            handle.write(f"person{n}@company{n % 977}.io,First{n},Last{n},Company {n % 977}\n")
    count = 0
    tracemalloc.start()
    try:
        for row in read_lead_rows(path):
            count += isinstance(row, LeadRow)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < 1024 * 1024


def test_cell_rows_are_the_rows_as_cells_in_the_order_of_fields(tmp_path: Path) -> None:
    text = (
        'notes,Last Name,email\n"a,\nb",Lee,a@acme.io\n\nonly one\n'
        '"x"y,Bo,b@acme.io\nz,Kim,c@acme.io,,\n'
    )
    path = write(tmp_path, text)
    with LeadCsv(path) as by_dict:
        as_dicts = list(by_dict)
        counts = (by_dict.rows_read, by_dict.rows_skipped, by_dict.blank_rows)
    with LeadCsv(path) as by_cells:
        assert by_cells.fields == ["last_name", "email"]
        as_cells = list(by_cells.cell_rows())
        assert (by_cells.rows_read, by_cells.rows_skipped, by_cells.blank_rows) == counts
    assert as_cells[0] == CellRow(1, ("Lee", "a@acme.io"))
    assert [
        item
        if isinstance(item, SkippedRow)
        else LeadRow(item[0], dict(zip(by_cells.fields, item[1], strict=True)))
        for item in as_cells
    ] == as_dicts
    assert [type(item).__name__ for item in as_cells] == [
        "CellRow",
        "SkippedRow",
        "SkippedRow",
        "CellRow",
    ]
