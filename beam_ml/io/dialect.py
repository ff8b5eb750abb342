"""How a CSV file is written: delimiter, quoting, encoding, compression.

A `Dialect` is detected once from a file's header and a sample (see
`detect_dialect`), stored in the dataset spec, and used by every later read
(spec inference, training, batch prediction), so serving reads files the way
training did. Flags override each part:

    d = detect_dialect("gs://bucket/export.csv.gz")            # sniffed
    d = detect_dialect("data.txt", delimiter="tab", encoding="cp1252")
    d.delimiter, d.encoding, d.compression, d.multiline         # ('\\t', 'cp1252', 'auto', False)

The delimiter is one of , ; TAB | (any single character with --delimiter).
Encodings must be ASCII-compatible (UTF-8, Latin-1, cp1252, Shift-JIS, ...):
the reader finds lines, quotes and delimiters in the raw bytes. `multiline`
says quoted values may hold line breaks; such files are read by one worker
(a byte-range split cannot know whether it starts inside a quoted value).
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
from typing import Any, Optional, Sequence

from beam_ml.errors import UserError
from beam_ml.io.files import read_head

__all__ = ["Dialect", "DELIMITERS", "COMPRESSIONS", "parse_delimiter", "normalize_encoding",
           "sniff_dialect", "detect_dialect", "parse_header", "record_is_open", "split_fields",
           "looks_like_swallowed_rows"]

# Delimiters tried by detection, in order of preference on ties.
DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|", "space": " "}

# Beam's CompressionTypes values (apache_beam.io.filesystem); 'auto' goes by the extension.
COMPRESSIONS = ("auto", "uncompressed", "gzip", "bzip2", "zstd", "deflate", "lzma")

# Bytes sniffed for the delimiter and quoted line breaks.
SNIFF_BYTES = 1 << 20
_SNIFF_LINES = 2000
# A quoted value spanning more lines than this in the sample is a stray quote, not evidence.
_MAX_SNIFF_RECORD_LINES = 100


@dataclasses.dataclass(frozen=True)
class Dialect:
    """How a CSV file is written.

    Attributes:
      delimiter: the field separator (one character).
      quotechar: the quote character, or "" when fields are never quoted.
      encoding: a Python codec name (normalized, e.g. 'utf-8', 'cp1252').
        'utf-8' also accepts a byte-order mark at the start of the file.
      compression: one of COMPRESSIONS; 'auto' picks it from each file's
        extension (.gz, .bz2, .zst, .deflate, .xz) like Beam's file IOs.
      multiline: quoted values may contain line breaks. Such files are read
        unsplit (one worker per file).
    """

    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    compression: str = "auto"
    multiline: bool = False

    def __post_init__(self):
        if len(self.delimiter) != 1 or self.delimiter in "\r\n" or self.delimiter == self.quotechar:
            raise UserError(f"--delimiter: expected one character other than a line break or the quote, "
                            f"got {self.delimiter!r}")
        if len(self.quotechar) > 1 or self.quotechar in ("\r", "\n"):
            raise UserError(f"dialect: quotechar must be one character or empty, got {self.quotechar!r}")
        if self.compression not in COMPRESSIONS:
            raise UserError(f"--compression: expected one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        object.__setattr__(self, "encoding", normalize_encoding(self.encoding))
        for ch in (self.delimiter, self.quotechar):
            if ch and not ch.isascii():
                raise UserError(f"dialect: delimiter and quote must be ASCII characters, got {ch!r}")

    def replace(self, **changes: Any) -> "Dialect":
        """A copy with the given fields changed; None values are ignored (flag not given)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "delimiter" in changes:
            changes["delimiter"] = parse_delimiter(changes["delimiter"])
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "Dialect":
        d = d or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"dialect: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**d)

    @property
    def csv_format(self) -> dict[str, Any]:
        """Keyword arguments for Python's csv.reader with the same quoting as pyarrow's parser."""
        if self.quotechar:
            return {"delimiter": self.delimiter, "quotechar": self.quotechar, "doublequote": True,
                    "quoting": csv.QUOTE_MINIMAL, "strict": False}
        return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE, "strict": False}


def parse_delimiter(value: str) -> str:
    """A --delimiter value: one character, or comma/semicolon/tab/pipe/space, or '\\t'."""
    v = str(value)
    named = _DELIMITER_NAMES.get(v.lower())
    if named:
        return named
    if len(v) != 1:
        raise UserError(f"--delimiter: expected one character or one of {', '.join(sorted(_DELIMITER_NAMES))}, "
                        f"got {value!r}")
    return v


def normalize_encoding(name: str) -> str:
    """The codec's canonical name; raises UserError for unknown or non-ASCII-compatible encodings."""
    try:
        codec = codecs.lookup(str(name))
    except LookupError:
        raise UserError(f"--encoding: unknown encoding {name!r} (e.g. utf-8, latin-1, cp1252)")
    canonical = "utf-8" if codec.name in ("utf-8", "utf-8-sig") else codec.name
    probe = "\n\r,;|\t\" azAZ09"
    try:
        ascii_compatible = probe.encode(canonical) == probe.encode("ascii") and \
            probe.encode("ascii").decode(canonical) == probe
    except (UnicodeError, LookupError):
        ascii_compatible = False
    if not ascii_compatible:
        raise UserError(f"--encoding: {name} is not ASCII-compatible (UTF-16/32 and the like); "
                        f"convert the file to UTF-8")
    return canonical


def split_fields(text: str, dialect: Dialect) -> list[str]:
    """The fields of one record's text (which may hold quoted line breaks)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]] + [parts[-1]]
    return next(csv.reader(lines, **dialect.csv_format), [])


def record_is_open(text: str, dialect: Dialect) -> bool:
    """True when `text` ends inside a quoted value (the record continues on the next line).

    Quotes are special only at the start of a field, and "" inside a quoted
    value is a literal quote: the rules of pyarrow's parser and Python's csv.
    """
    if not dialect.quotechar or dialect.quotechar not in text:
        return False
    # Feed one more line: a record still open swallows it (one record), a closed one does not.
    try:
        parts = text.split("\n")
        lines = [p + "\n" for p in parts] + ["x"]
        n = sum(1 for _ in csv.reader(lines, **dialect.csv_format))
    except csv.Error:
        return False  # malformed in another way (a lone CR): the parser rejects the line itself
    return n == 1


def parse_header(line: str, dialect: Dialect, source: str) -> list[str]:
    """Column names from a header line; raises UserError for empty or repeated names."""
    try:
        names = [h.strip() for h in split_fields(line, dialect)]
    except csv.Error as e:
        raise UserError(f"--input: {source} has a malformed header line: {e}")
    if not names or all(not h for h in names):
        raise UserError(f"--input: {source} is empty (no header line)")
    if any(not h for h in names):
        raise UserError(f"--input: {source} has an empty column name in its header")
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise UserError(f"--input: {source} header repeats column(s) {', '.join(dupes)}")
    return names


def _field_count(line: str, dialect: Dialect) -> int:
    try:
        return len(split_fields(line, dialect))
    except csv.Error:
        return -1


def _detect_delimiter(header: str, sample: Sequence[str], quotechar: str) -> str:
    best, best_score = ",", (-1.0, 0)
    for d in DELIMITERS:
        dialect = Dialect(delimiter=d, quotechar=quotechar)
        n = _field_count(header, dialect)
        if n < 2:
            continue
        rows = [line for line in sample if line.strip()]
        agree = sum(1 for line in rows if _field_count(line, dialect) == n) / len(rows) if rows else 1.0
        score = (agree, n)
        if score > best_score:  # strictly better: earlier delimiters win ties
            best, best_score = d, score
    return best


def looks_like_swallowed_rows(lines: Sequence[str], ncols: int, dialect: Dialect) -> bool:
    """True when a record spanning `lines` looks like stray quotes that swallowed whole rows.

    A quoted value with line breaks starts in mid-row (or ends the row) and
    continues with free text. A stray quote that happens to close on a later
    line makes a record whose first and last lines are each a whole row of
    `ncols` fields (quotes ignored), or whose inner lines are whole rows.
    """
    if len(lines) < 2:
        return False
    if all(line.count(dialect.delimiter) == ncols - 1 for line in (lines[0], lines[-1])):
        return True
    return any(not record_is_open(t, dialect) and _field_count(t, dialect) == ncols for t in lines[1:-1])


def _has_quoted_line_breaks(lines: Sequence[str], dialect: Dialect, ncols: int) -> bool:
    """True when the sample's quoted values that span lines are more often well-formed records than not.

    A stray quote also opens a value across lines, but the record it makes has
    the wrong number of fields, never closes, or swallows whole rows: that is
    evidence against, so a file with stray quotes and no real multi-line
    values is never read as multiline (which would merge rows).
    """
    q = dialect.quotechar
    well_formed = stray = 0
    i = 0
    while i < len(lines):
        if q and q in lines[i] and record_is_open(lines[i], dialect):
            text, j = lines[i], i
            while record_is_open(text, dialect) and j + 1 < len(lines) and j - i < _MAX_SNIFF_RECORD_LINES:
                j += 1
                text += "\n" + lines[j]
            if record_is_open(text, dialect) or _field_count(text, dialect) != ncols or \
                    looks_like_swallowed_rows(lines[i:j + 1], ncols, dialect):
                stray += 1
                i += 1
            else:
                well_formed += 1
                i = j + 1
        else:
            i += 1
    return well_formed > stray


def sniff_dialect(head: bytes, at_eof: bool, source: str, *, delimiter: Optional[str] = None,
                  encoding: Optional[str] = None, compression: Optional[str] = None,
                  multiline: Optional[bool] = None, quotechar: str = '"') -> Dialect:
    """Detects a file's dialect from its first bytes (decompressed); given values win.

    Args:
      head: the first bytes of the file (a few hundred KB is plenty).
      at_eof: `head` is the whole file (its last line is complete).
      source: the file, for errors.
      delimiter, encoding, compression, multiline: overrides (None = detect).
      quotechar: the quote character ("" for none).

    Returns:
      The Dialect.
    """
    enc = normalize_encoding(encoding or "utf-8")
    text = head.decode(enc, errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\n" not in text and "\r" in text:
        raise UserError(f"--input: {source} ends its lines with a bare CR (old Mac format); "
                        f"convert the line endings to LF or CRLF")
    lines = text.split("\n")
    if not at_eof and len(lines) > 1:
        lines.pop()  # a partial line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines[:_SNIFF_LINES]]
    header, sample = lines[0], lines[1:]
    d = parse_delimiter(delimiter) if delimiter is not None else _detect_delimiter(header, sample, quotechar)
    dialect = Dialect(delimiter=d, quotechar=quotechar, encoding=enc, compression=compression or "auto")
    if multiline is None:
        multiline = _has_quoted_line_breaks(sample, dialect, _field_count(header, dialect))
    return dataclasses.replace(dialect, multiline=bool(multiline))


def detect_dialect(path: str, *, delimiter: Optional[str] = None, encoding: Optional[str] = None,
                   compression: Optional[str] = None, multiline: Optional[bool] = None) -> Dialect:
    """Detects the dialect of a file (local or any Beam filesystem, e.g. gs://); given values win."""
    head, at_eof = read_head(path, compression or "auto", SNIFF_BYTES)
    if not head.strip():
        raise UserError(f"--input: {path} is empty (no header line)")
    return sniff_dialect(head, at_eof, path, delimiter=delimiter, encoding=encoding, compression=compression,
                         multiline=multiline)
