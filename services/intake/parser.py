"""Reading an uploaded batch file row by row, so a large file never sits in memory as objects.

CSV goes through the `csv` module over a UTF-8 text stream; a JSON array is decoded one element
at a time. Both yield `RawRow`s (cells as text, untrimmed) and raise `FileRefused` for anything
that makes the whole file unusable: a wrong encoding, an unknown or missing column, too many rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from services.intake.domain import (
    TEMPLATE_COLUMNS,
    FileRefused,
    RowError,
    check_columns,
    normalise_column_name,
    shown,
)

Format = Literal["csv", "json"]

_CHUNK_CHARS = 64 * 1024
_MAX_ELEMENT_CHARS = 1024 * 1024


@dataclass
class RawRow:
    """One data row as sent: 1-based row number, cells by column, and problems found while reading."""

    number: int
    cells: dict[str, str | None]
    errors: list[RowError] = field(default_factory=list)


def read_rows(binary: IO[bytes], file_format: Format, *, max_rows: int) -> Iterator[RawRow]:
    """Rows of an uploaded file; raises FileRefused mid-way if the file turns out unusable."""
    _refuse_other_unicode_encodings(binary)
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")
    rows = _read_json(text) if file_format == "json" else _read_csv(text)
    count = 0
    last = 0
    try:
        for row in rows:
            count += 1
            last = row.number
            if count > max_rows:
                raise FileRefused(
                    "too_many_rows",
                    f"the file has more than {max_rows} data rows; split it into files of at most {max_rows} rows",
                )
            yield row
    except UnicodeDecodeError:
        raise FileRefused(
            "not_utf8",
            f"the file is not UTF-8 text (the problem comes after data row {last}); "
            "save it as 'CSV UTF-8' or UTF-8 JSON and upload it again",
        ) from None
    finally:
        rows.close()
        text.detach()  # the caller owns and closes the binary file
    if count == 0:
        raise FileRefused(
            "no_rows", "the file has no data rows: it needs a header row and at least one row below it"
        )


def _refuse_other_unicode_encodings(binary: IO[bytes]) -> None:
    start = binary.read(4)
    binary.seek(0)
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or start.startswith(
        (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    ):
        raise FileRefused(
            "not_utf8", "the file is UTF-16 or UTF-32 text; save it as 'CSV UTF-8' and upload it again"
        )


# ---- CSV ------------------------------------------------------------------------------------


def _pick_delimiter(header_line: str) -> str:
    """Commas by default; spreadsheets in some locales write ';' or tab, which the header reveals."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] > counts[","] else ","


def _read_csv(text: io.TextIOWrapper) -> Generator[RawRow, None, None]:
    try:
        header_line = text.readline()
    except UnicodeDecodeError:
        raise FileRefused(
            "not_utf8", "the file is not UTF-8 text; save it as 'CSV UTF-8' and upload it again"
        ) from None
    if not header_line.strip():
        raise FileRefused("empty_file", "the file is empty: it needs a header row and at least one data row")
    delimiter = _pick_delimiter(header_line)
    # The csv module's own cell limit (128 KiB) would refuse a whole file for one huge cell; the
    # file size limit bounds cells instead, and an over-long cell is that row's error.
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
    reader = csv.reader(itertools.chain([header_line], text), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        names = [normalise_column_name(name) for name in header]
        named = [(index, name) for index, name in enumerate(names) if name]
        check_columns(name for _, name in named)
        width = len(names)
        number = 0
        for cells in reader:
            number += 1
            if not any(cell.strip() for cell in cells):
                continue  # blank lines count in row numbers (they match the spreadsheet) but are skipped
            values: dict[str, str | None] = {
                name: cells[index] if index < len(cells) else None for index, name in named
            }
            errors: list[RowError] = []
            unnamed = [
                index + 1
                for index, cell in enumerate(cells)
                if cell.strip() and (index >= width or not names[index])
            ]
            if unnamed:
                errors.append(
                    RowError(
                        number,
                        None,
                        "cell_without_column",
                        f"the row has a value in column {unnamed[0]}, which has no header: "
                        "a value containing the separator must be in double quotes",
                    )
                )
            yield RawRow(number, values, errors)
    except csv.Error as error:
        raise FileRefused(
            "malformed_csv", f"the CSV file cannot be read after data row {reader.line_num - 1}: {error}"
        ) from None


# ---- JSON -----------------------------------------------------------------------------------


class _JsonStream:
    """Decodes a JSON array one element at a time from a text stream, keeping a bounded buffer."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text = text
        self.buffer = ""
        self.position = 0
        self.at_end = False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.at_end:
            return False
        chunk = self.text.read(_CHUNK_CHARS)
        if not chunk:
            self.at_end = True
            return False
        self.buffer = self.buffer[self.position :] + chunk
        self.position = 0
        return True

    def next_significant(self) -> str:
        """The next non-whitespace character (not consumed), or '' at the end of the file."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in " \t\r\n":
                self.position += 1
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self._fill():
                return ""

    def take(self) -> None:
        self.position += 1

    def decode_value(self, element: int) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                if len(self.buffer) - self.position > _MAX_ELEMENT_CHARS or not self._fill():
                    raise FileRefused(
                        "malformed_json", f"the JSON array cannot be read at element {element}: {error.msg}"
                    ) from None
                continue
            except ValueError:  # e.g. a number with more digits than Python converts
                raise FileRefused(
                    "malformed_json",
                    f"the JSON array cannot be read at element {element}: a number is too long",
                ) from None
            self.position = end
            return value


def _read_json(text: io.TextIOWrapper) -> Generator[RawRow, None, None]:
    stream = _JsonStream(text)
    if stream.next_significant() == "":
        raise FileRefused("empty_file", "the file is empty: send a JSON array of row objects")
    if stream.next_significant() != "[":
        raise FileRefused("malformed_json", "the JSON body must be an array of row objects: [{...}, {...}]")
    stream.take()
    number = 0
    if stream.next_significant() == "]":
        stream.take()
    else:
        while True:
            number += 1
            stream.next_significant()
            element = stream.decode_value(number)
            if not isinstance(element, dict):
                raise FileRefused("malformed_json", f"element {number} of the JSON array is not an object")
            yield RawRow(number, _json_cells(number, element))
            separator = stream.next_significant()
            stream.take()
            if separator == "]":
                break
            if separator != ",":
                raise FileRefused("malformed_json", f"the JSON array cannot be read after element {number}")
    if stream.next_significant() != "":
        raise FileRefused("malformed_json", "the JSON body has content after the end of the array")


def _json_cells(number: int, element: dict[str, Any]) -> dict[str, str | None]:
    names = {normalise_column_name(str(key)): value for key, value in element.items()}
    if len(names) != len(element):
        raise FileRefused("duplicate_column", f"element {number} has the same key twice")
    # A JSON row may leave keys out (a missing required key is then a row error), never add one.
    for name in names:
        if name not in TEMPLATE_COLUMNS:
            raise FileRefused(
                "unknown_column",
                f"unknown key '{shown(name)}' in element {number}: the batch template v1 has only these keys: "
                f"{', '.join(TEMPLATE_COLUMNS)}",
                column=shown(name),
            )
    return {name: _json_text(number, name, value) for name, value in names.items()}


def _json_text(number: int, name: str, value: Any) -> str | None:
    """JSON values as the cell text a CSV would carry; rules then judge them the same way."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if name == "vulnerabilities" and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ";".join(value)
    raise FileRefused(
        "malformed_json",
        f"element {number}: the value of '{name}' must be text or a number, not a list or object",
    )
