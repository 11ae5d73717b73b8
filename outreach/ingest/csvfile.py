"""Streaming reader for the CSV files a care team exports (rosters, events).

Spreadsheets produce BOMs, CRLF, quoted multi-line fields and the odd stray byte; a care team
needs every problem tied to the physical line they see in an editor, and a million-row file must
not be held in memory. So the file is read as bytes line by line (counting lines and bytes
ourselves), decoded per line, and handed to the csv module, which reports where each record ends.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from outreach.errors import UserError

# Files smaller than this finish before a progress report would be worth drawing.
PROGRESS_MIN_BYTES = 4 * 1024 * 1024
# The first bytes are checked for UTF-8 before anything loads, so a Latin-1 or UTF-16 export
# fails as one clear message instead of as hundreds of rejected rows.
_SNIFF_BYTES = 64 * 1024
_PROGRESS_EVERY = 1024 * 1024
_NOT_UTF8 = "not UTF-8 text (an unreadable character); save the file as CSV UTF-8"
_HEADER_NAME = re.compile(r"[\s\-]+")


@dataclass
class RowError:
    """One problem with one record, in the words a care team can act on."""

    line: int  # physical line (1-based) where the record starts
    column: str  # "" when the whole record is unusable
    value: str
    reason: str

    def describe(self) -> str:
        if self.column:
            return f"line {self.line}, {self.column} {self.value!r}: {self.reason}"
        return f"line {self.line}: {self.reason}"


class Problems(Protocol):
    """Where an import puts the problems it finds: a list, or an errorsfile.ErrorSpool that keeps
    most of them on disk (a roster can have as many problems as rows)."""

    def append(self, error: RowError, /) -> None: ...

    def extend(self, errors: Iterable[RowError], /) -> None: ...


class Progress(Protocol):
    """Where a long read reports how far it got, in bytes. The engine draws nothing itself: an
    entry point passes one in (the CLI: a rich bar on a terminal, outreach/apps/progress.py)."""

    def start(self, label: str, total: int) -> None:
        """A read of `total` bytes begins; `label` names it ("importing roster.csv")."""
        ...

    def advance(self, done: int, lines: int = 0) -> None:
        """`done` more bytes were read, in `lines` more lines (0 when the reader does not count them)."""
        ...

    def stop(self) -> None:
        """The read ended (finished or failed)."""
        ...


class CsvFile:
    """A header-checked CSV file, opened as a context manager, whose `records()` yields only records
    with the right shape; malformed ones are appended to `errors` and counted in `rejected`."""

    def __init__(
        self,
        path: Path,
        required: Sequence[str],
        optional: Sequence[str],
        *,
        label: str = "file",
        progress: Progress | None = None,
        errors: Problems | None = None,
    ) -> None:
        self.path = path
        self.required = tuple(required)
        self.optional = tuple(optional)
        self.label = label
        self.progress = progress
        self.errors: Problems = [] if errors is None else errors
        self.rejected = 0
        self.columns: tuple[str, ...] = ()
        self.index: dict[str, int] = {}  # known column -> position
        self.ignored: tuple[str, ...] = ()  # columns present but not ours
        self.bad_lines: dict[int, str] = {}  # physical line -> why it cannot be read
        self._raw: IO[bytes] | None = None
        self._lines: Iterator[str] = iter(())  # the file's physical lines, decoded
        self._reader: Any = None
        # The physical lines the reader took for the record being read (the csv module reads no
        # further than a record's end), and the line number of the first of them.
        self._span: list[str] = []
        self._start = 1

    def __enter__(self) -> CsvFile:
        try:
            self._raw = self.path.open("rb")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot read the {self.label} ({exc.strerror})") from None
        try:
            self._check_encoding()
            self._read_header()
        except BaseException:
            self._raw.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._raw is not None:
            self._raw.close()

    def _check_encoding(self) -> None:
        assert self._raw is not None
        head = self._raw.read(_SNIFF_BYTES)
        self._raw.seek(0)
        if not head.strip(b"\xef\xbb\xbf \t\r\n"):
            raise UserError(f"{self.path}: the {self.label} is empty (expected a header row)")
        if b"\r" in head and b"\n" not in head:
            raise UserError(
                f"{self.path}: the {self.label} ends lines with CR only (old Mac format); "
                "save it as CSV UTF-8"
            )
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise UserError(f"{self.path}: the {self.label} is UTF-16; save it as CSV UTF-8")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:  # not merely a character cut at the sniff boundary
                line = head.count(b"\n", 0, exc.start) + 1
                raise UserError(
                    f"{self.path}: the {self.label} is not UTF-8 text (byte 0x{head[exc.start]:02x} on line "
                    f"{line}); save it as CSV UTF-8"
                ) from None

    def _read_header(self) -> None:
        self._lines = self._decoded_lines()
        self._reader = csv.reader(self._lines, strict=False)
        header: list[str] | None = None
        try:
            for row in self._reader:
                if any(cell.strip() for cell in row):
                    header = row
                    break
        except csv.Error as exc:
            raise UserError(
                f"{self.path}: the header of the {self.label} is not readable CSV ({exc})"
            ) from None
        if header is None:
            raise UserError(f"{self.path}: the {self.label} is empty (expected a header row)")
        self._start += len(self._span)
        self._span.clear()
        names = [_HEADER_NAME.sub("_", cell.strip().lower()) for cell in header]
        while names and not names[-1]:  # spreadsheets pad the header with empty cells
            names.pop()
        seen: set[str] = set()
        for name in names:
            if name and name in seen:
                raise UserError(f"{self.path}: column {name!r} appears twice in the header")
            seen.add(name)
        missing = [name for name in self.required if name not in seen]
        if missing:
            found = ", ".join(n for n in names if n) or "none"
            hint = "" if seen & {*self.required, *self.optional} else " (the first line must be the header)"
            raise UserError(
                f"{self.path}: the {self.label} lacks required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}; found columns: {found}{hint}"
            )
        known = {*self.required, *self.optional}
        self.columns = tuple(names)
        self.index = {name: i for i, name in enumerate(names) if name in known}
        self.ignored = tuple(n for n in names if n and n not in known)

    def _decoded_lines(self) -> Iterator[str]:
        """Physical lines as text; an undecodable line is replaced, remembered and later rejected."""
        assert self._raw is not None
        bar = self._progress()
        span = self._span
        number = 0
        pending = 0
        reported = 0  # lines
        try:
            for raw in self._raw:
                number += 1
                pending += len(raw)
                if pending >= _PROGRESS_EVERY and bar is not None:
                    bar.advance(pending, number - reported)
                    pending, reported = 0, number
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.bad_lines[number] = _NOT_UTF8
                    text = raw.decode("utf-8", errors="replace")
                if b"\x00" in raw:  # databases refuse NUL in text; so would any SMS
                    self.bad_lines[number] = "contains a NUL byte (binary data, not text)"
                    text = text.replace("\x00", "")
                if number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                span.append(text)
                yield text
        finally:
            if bar is not None:
                bar.stop()

    def _progress(self) -> Progress | None:
        """The caller's progress, started, when the file is large enough to be worth reporting."""
        if self.progress is None:
            return None
        size = self.path.stat().st_size
        if size < PROGRESS_MIN_BYTES:
            return None
        self.progress.start(f"importing {self.path.name}", size)
        return self.progress

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(first physical line, fields) for each non-blank record with as many fields as the header.

        The loop runs once per row of million-row files, so the usual record (one line, the
        header's width, no unreadable line in the file) takes the short way; every other record
        takes the long one, which would decide the same for it."""
        width = len(self.columns)
        span = self._span
        while True:
            try:
                row: list[str] | None = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                row, problem = None, f"unreadable CSV record ({exc})"
            line = self._start
            if row is not None and len(span) == 1 and len(row) == width and any(row) and not self.bad_lines:
                self._start = line + 1
                span.clear()
                yield line, row
                continue
            count = len(span)
            if count == 0:  # an error that consumed nothing would repeat forever
                return
            self._start = line + count
            texts = span[:]
            span.clear()
            if count > 1 and _swallowed(texts, width):
                self._unclosed_quote(line, texts)
            elif row is None:
                self._reject(line, problem)
            elif self._regular(line, line + count - 1, row, width):
                yield line, row

    def _regular(self, line: int, end: int, row: list[str], width: int) -> bool:
        """Whether the record on physical lines line..end is one to check; a blank one is skipped,
        a misshapen one or one with an unreadable line rejected. Trims the empty cells a
        spreadsheet pads rows with."""
        if len(row) != width:
            if len(row) > width and not any(row[width:]):
                del row[width:]  # trailing empty cells from a spreadsheet
            elif not any(cell.strip() for cell in row):
                return False  # blank line
            else:
                self._reject(line, f"expected {width} fields as in the header, found {len(row)}")
                return False
        elif not any(row):
            return False
        if self.bad_lines:
            reason = next((self.bad_lines[n] for n in range(line, end + 1) if n in self.bad_lines), None)
            if reason is not None:
                self._reject(line, reason)
                return False
        return True

    def _unclosed_quote(self, line: int, texts: list[str]) -> None:
        """Reject the record on `texts` (its first line is `line`) as one value run on past its
        line by a quote never closed, and read the lines it swallowed again as records of their
        own, so the rows after the mistake still load."""
        end = line + len(texts) - 1
        self._reject(line, f"an unclosed quote joins lines {line}–{end} into one value; close the quote")
        self._start = line + 1
        self._reader = csv.reader(itertools.chain(self._replay(texts[1:]), self._lines), strict=False)

    def _replay(self, texts: list[str]) -> Iterator[str]:
        for text in texts:
            self._span.append(text)
            yield text

    def _reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        self.errors.append(RowError(line=line, column="", value="", reason=reason))


def _swallowed(texts: list[str], width: int) -> bool:
    """Whether a record spread over the physical lines `texts` is rows run together by a quote
    never closed, rather than a value with a line break typed into it (which spreadsheets write,
    quoted, and which loads). Told apart by the lines after the first: one that is a whole row on
    its own (as many fields as the header, no quote left over in any) was swallowed. A typed line
    break's last line holds the closing quote, so read alone it leaves a quote over."""
    for text in texts[1:]:
        fields = next(csv.reader([text], strict=False), [])
        if len(fields) == width and not any('"' in value for value in fields):
            return True
    return False
