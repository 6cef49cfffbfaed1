"""Streaming reader of MediaWiki MySQL dump files (`page.sql.gz`, `pagelinks.sql.gz`, ...).

A dump holds one table: a `CREATE TABLE` header (the only trustworthy source of the column
order: `categorylinks` and `pagelinks` changed theirs between MediaWiki versions) followed by
extended `INSERT INTO `t` VALUES (...),(...);` statements that can be hundreds of MB long. The
file is read in blocks of `chunk_bytes`, never by line, so memory stays at a few blocks.

Two parse paths, both validating every byte of the tuple list:
- all-integer tables (the current `pagelinks`): delete the parentheses, let
  `np.fromstring(sep=',')` parse the numbers, and check the structure by comparing the
  digit-free text with the expected `(,,),` pattern (~5M rows/s with gzip, one core);
- anything with strings or floats: one compiled regex per tuple, built from the column types,
  and `re.split` over a whole statement (a statement ends at ';' + newline: mysqldump escapes
  newlines inside strings), whose in-between pieces must all be empty; a statement longer
  than a block is cut after the last tuple a possessive run of the regex accepts (~1M rows/s).
  Strings: MySQL backslash escapes and doubled quotes, UTF-8 decoded with replacement, so a
  binary title never aborts a build.
"""

from __future__ import annotations

import bz2
import gzip
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping, Sequence

import numpy as np

# NULL in an integer column (int64 cannot hold a missing value); NULL floats become NaN and
# NULL strings None.
NULL_INT = np.iinfo(np.int64).min

_INT_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
_FLOAT_TYPES = {"float", "double", "real", "decimal", "numeric"}
_COLUMN_LINE = re.compile(rb"^\s*`([^`]+)`\s+(\w+)(.*)$")
_CREATE = re.compile(rb"CREATE TABLE `([^`]+)` \(")
_INSERT = re.compile(rb"INSERT INTO `([^`]+)` VALUES ?")
_UNESCAPE = re.compile(r"\\(.)|''", re.S)
_SPECIAL_ESCAPE = re.compile(r"\\[0bnrtZ%_]")  # escapes that do not stand for their own character
_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a",
            "%": "\\%", "_": "\\_"}  # MySQL keeps the backslash of \% and \_

_STR_TEXT = rb"[^'\\]*(?:(?:\\.|'')[^'\\]*)*"
_NUMBER = {"int": rb"-?\d+", "float": rb"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"}
_MAX_TUPLE_BYTES = 16 << 20  # an unparsable remainder longer than this is an error, not a short read


@dataclass(frozen=True)
class Column:
    """One column of the `CREATE TABLE` header: kind is 'int', 'float' or 'str'."""

    name: str
    sql_type: str
    kind: str
    nullable: bool

    def pattern(self, capture: bool) -> bytes:
        """Regex of one value. Captured, a nullable string takes two groups (its text between
        the quotes, a NULL flag: text and empty text differ from NULL); NOT NULL columns
        accept no NULL, which keeps the common pattern short."""
        if self.kind == "str":
            text = rb"(?:_binary )?'" + (rb"(" + _STR_TEXT + rb")" if capture else _STR_TEXT) + rb"'"
            null = rb"(NULL)" if capture else rb"NULL"
        else:
            text, null = _NUMBER[self.kind], rb"NULL"
        value = rb"(?:" + text + rb"|" + null + rb")" if self.nullable else text
        return rb"(" + value + rb")" if capture and self.kind != "str" else value

    @property
    def groups(self) -> int:
        return 2 if self.kind == "str" and self.nullable else 1


def open_dump(path: str | Path) -> BinaryIO:
    """Binary reader of a plain, gzip or bzip2 file (sniffed from the magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return open(path, "rb")


def table_columns(path: str | Path) -> list[Column]:
    """The columns of the dump's `CREATE TABLE`, in file order (reads only the header)."""
    with open_dump(path) as f:
        return _Scanner(f, Path(path)).header()[1]


def read_table(path: str | Path, columns: Sequence[str], *,
               where: Mapping[str, object] | None = None,
               chunk_rows: int = 1 << 20, chunk_bytes: int = 32 << 20) -> Iterator[dict[str, np.ndarray]]:
    """Yield chunks {column: array} of the requested columns, in dump order.

    where: {column: value or collection of values}: keep rows whose column equals the value
    (is in the collection); the columns need not be requested. Integer columns come back as
    int64 (NULL -> NULL_INT), floats as float64 (NULL -> NaN), strings as object arrays of
    str (NULL -> None). A chunk holds at least `chunk_rows` rows (before filtering) unless the
    dump ends; `chunk_bytes` is the read size of the decompressed text.
    """
    where = dict(where or {})
    if not columns:
        raise ValueError(f"{path}: read_table needs at least one column")
    with open_dump(path) as f:
        scanner = _Scanner(f, Path(path), chunk_bytes)
        table, cols = scanner.header()
        by_name = {c.name: c for c in cols}
        missing = [c for c in [*columns, *where] if c not in by_name]
        if missing:
            raise ValueError(f"{path}: table `{table}` has no column(s) {missing}; "
                             f"columns: {[c.name for c in cols]}")
        wanted = list(dict.fromkeys([*columns, *where]))
        parser = _TupleParser(cols, wanted)
        pending: list[dict[str, np.ndarray]] = []
        rows = 0
        for region in scanner.regions(table, parser):
            part = parser.parse(region, scanner)
            pending.append(part)
            rows += len(part[wanted[0]])
            if rows >= chunk_rows:
                yield _finish(pending, columns, where)
                pending, rows = [], 0
        if rows:
            yield _finish(pending, columns, where)


def _finish(parts: list[dict[str, np.ndarray]], columns: Sequence[str],
            where: Mapping[str, object]) -> dict[str, np.ndarray]:
    merged = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    if not where:
        return {c: merged[c] for c in columns}
    keep = np.ones(len(next(iter(merged.values()))), bool)
    for name, value in where.items():
        col = merged[name]
        if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
            keep &= np.isin(col, np.asarray(list(value), dtype=col.dtype))
        else:
            keep &= col == value
    return {c: merged[c][keep] for c in columns}


def _parse_columns(body: bytes) -> list[Column]:
    cols = []
    for line in body.split(b"\n"):
        m = _COLUMN_LINE.match(line)
        if not m:  # PRIMARY KEY / KEY / UNIQUE KEY / CONSTRAINT lines start without a backtick
            continue
        name, sql_type, rest = m.group(1).decode(), m.group(2).decode().lower(), m.group(3).upper()
        kind = "int" if sql_type in _INT_TYPES else "float" if sql_type in _FLOAT_TYPES else "str"
        cols.append(Column(name, sql_type, kind, b"NOT NULL" not in rest))
    return cols


class _Scanner:
    """Block reader over the decompressed text: finds the header, then yields the extent of
    each parsable run of tuples (the parser decides how far a run may go)."""

    def __init__(self, f: BinaryIO, path: Path, chunk_bytes: int = 32 << 20):
        self.f, self.path, self.chunk_bytes = f, path, chunk_bytes
        self.buf, self.pos, self.offset, self.eof = b"", 0, 0, False

    def fill(self, size: int | None = None) -> None:
        """Drop the consumed prefix and append one block (of `size` bytes, default chunk_bytes)."""
        try:
            data = self.f.read(size or self.chunk_bytes)
        except (EOFError, OSError, zlib.error) as e:  # gzip / bz2: truncated or corrupt stream
            raise ValueError(f"{self.path}: unreadable compressed dump ({e})") from None
        self.eof = not data
        self.offset += self.pos
        self.buf = self.buf[self.pos:] + data
        self.pos = 0

    def error(self, what: str, at: int | None = None) -> ValueError:
        at = self.pos if at is None else at
        snippet = self.buf[at:at + 80].decode("utf-8", "replace")
        return ValueError(f"{self.path}: {what} at byte {self.offset + at} of the decompressed dump: {snippet!r}")

    def header(self) -> tuple[str, list[Column]]:
        """(table name, columns) of the first CREATE TABLE; an INSERT before it is an error."""
        while True:
            create = _CREATE.search(self.buf, self.pos)
            insert = self.buf.find(b"INSERT INTO", self.pos)
            if insert >= 0 and (create is None or insert < create.start()):
                raise self.error("INSERT before any CREATE TABLE (the column order is unknown)", insert)
            if create is not None:
                end = self.buf.find(b"\n)", create.end())
                if end >= 0:
                    cols = _parse_columns(self.buf[create.end():end])
                    if not cols:
                        raise self.error("CREATE TABLE without columns", create.start())
                    self.pos = end
                    return create.group(1).decode(), cols
                self.pos = create.start()
            else:
                self.pos = max(self.pos, len(self.buf) - 64)  # a keyword may straddle two blocks
            if self.eof:
                raise ValueError(f"{self.path}: no complete CREATE TABLE header (is this a MediaWiki SQL dump?)")
            self.fill(min(self.chunk_bytes, 1 << 16))  # the header is a few kB: do not decompress a block for it

    def regions(self, table: str, parser: "_TupleParser") -> Iterator[tuple[int, int]]:
        """Yield (start, end) spans of self.buf holding whole tuples of `table`'s INSERTs."""
        while True:
            at = self.buf.find(b"INSERT INTO", self.pos)
            if at < 0 or (len(self.buf) - at < 512 and not self.eof):
                if self.eof:
                    return
                self.pos = at if at >= 0 else max(self.pos, len(self.buf) - 16)
                self.fill()
                continue
            m = _INSERT.match(self.buf, at)
            if m is None:
                raise self.error("unsupported INSERT statement (expected INSERT INTO `table` VALUES)", at)
            if m.group(1).decode() != table:
                raise self.error(f"INSERT into `{m.group(1).decode()}` in the dump of `{table}`", at)
            self.pos = m.end()
            while True:  # inside one statement
                end, done = parser.extent(self.buf, self.pos)
                if end > self.pos:
                    yield self.pos, end
                elif self.eof or len(self.buf) - self.pos > _MAX_TUPLE_BYTES:
                    raise self.error("malformed or truncated tuple")
                self.pos = end
                if done:
                    self.pos += 1  # the ';'
                    break
                self.fill()  # the rest of the buffer is a partial tuple


class _TupleParser:
    """Parses tuple lists of one table into the `wanted` columns."""

    def __init__(self, cols: list[Column], wanted: list[str]):
        self.cols, self.wanted = cols, wanted
        self.k = len(cols)
        self.all_int = all(c.kind == "int" for c in cols)
        self.index = {c.name: i for i, c in enumerate(cols)}
        captured = [c.pattern(capture=c.name in wanted) for c in cols]
        plain = rb"\(" + rb",".join(c.pattern(capture=False) for c in cols) + rb"\)"
        # A tuple and its trailing comma; `split` returns the text between matches (all empty
        # when the tuples are contiguous, which validates the list) followed by the groups.
        self.tuple = re.compile(rb"\(" + rb",".join(captured) + rb"\),", re.S)
        self.run = re.compile(rb"(?:" + plain + rb",)*+", re.S)  # possessive: no backtracking state
        self.last = re.compile(plain + rb";", re.S)
        self.group: dict[str, int] = {}  # first split group of each wanted column
        g = 0
        for c in cols:
            if c.name in wanted:
                self.group[c.name] = g
                g += c.groups
        self.template = b"(" + b"," * (self.k - 1) + b"),"

    def extent(self, buf: bytes, pos: int) -> tuple[int, bool]:
        """(end of the whole tuples from pos, whether the statement ends there with ';')."""
        if self.all_int:  # no strings, so ';' and '),' cannot be inside a value
            semi = buf.find(b";", pos)
            if semi >= 0:
                return semi, True
            cut = buf.rfind(b"),", pos)
            return (cut + 2 if cut >= 0 else pos), False
        # mysqldump escapes newlines inside strings: a statement ends at the first ';\n'.
        semi = buf.find(b";\n", pos)
        if semi >= 0:
            return semi, True
        # A statement longer than the buffer: only a validating run finds a safe cut.
        end = self.run.match(buf, pos).end()
        last = self.last.match(buf, end)
        if last is not None:
            return last.end() - 1, True
        return end, False

    def parse(self, region: tuple[int, int], scanner: _Scanner) -> dict[str, np.ndarray]:
        start, end = region
        text = scanner.buf[start:end]
        if not text.endswith(b","):
            text += b","
        if self.all_int:
            out = self._parse_ints(text)
            if out is not None:
                return out
        pieces = self.tuple.split(text)
        step = self.tuple.groups + 1
        bad = next((p for p in pieces[0::step] if p), None)
        if bad is not None:
            raise scanner.error(f"malformed tuple near {bad[:80].decode('utf-8', 'replace')!r}", start)
        out = {}
        for name in self.wanted:
            c, g = self.cols[self.index[name]], self.group[name]
            if c.kind == "str":
                out[name] = _strings(pieces[g + 1::step], pieces[g + 2::step] if c.nullable else None)
            else:
                out[name] = _numbers(pieces[g + 1::step], c.kind, scanner, start)
        return out

    def _parse_ints(self, text: bytes) -> dict[str, np.ndarray] | None:
        """All-integer fast path; None when the text is not plain integer tuples (NULLs)."""
        n = text.count(b"(")
        if text.translate(None, b"0123456789-") != self.template * n:
            return None
        with warnings.catch_warnings():  # a short parse is caught by the count check below
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(text.translate(None, b"()"), dtype=np.int64, sep=",")
        if len(values) != n * self.k:
            return None
        table = values.reshape(n, self.k)
        return {name: np.ascontiguousarray(table[:, self.index[name]]) for name in self.wanted}


def _numbers(tokens: Sequence[bytes], kind: str, scanner: _Scanner, at: int) -> np.ndarray:
    dtype = np.int64 if kind == "int" else np.float64
    if not tokens:
        return np.zeros(0, dtype)
    text = b",".join(tokens)
    if b"NULL" in text:
        text = text.replace(b"NULL", str(NULL_INT).encode() if kind == "int" else b"nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        values = np.fromstring(text, dtype=dtype, sep=",")
    if len(values) != len(tokens):
        raise scanner.error(f"unparsable {kind} value", at)
    return values


def _strings(texts: Sequence[bytes | None], nulls: Sequence[bytes | None] | None) -> np.ndarray:
    """Decode one column's quoted-string contents (escapes resolved). `split` gives a NULL
    value as text None and flag b'NULL' (nulls is None for a NOT NULL column); NULL -> None."""
    out = np.empty(len(texts), dtype=object)
    if not texts:
        return out
    null = None
    if nulls is not None and nulls.count(None) != len(nulls):
        null = np.fromiter((f is not None for f in nulls), bool, len(nulls))
        texts = [b"" if t is None else t for t in texts]
    # One decode and one split for the whole column: mysqldump escapes newlines, so a raw
    # '\n' can only be a separator (a stray one falls back to decoding item by item).
    joined = b"\n".join(texts).decode("utf-8", "replace")
    if joined.count("\n") != len(texts) - 1:
        out[:] = [_unescape(t.decode("utf-8", "replace")) for t in texts]
    elif "\\" not in joined and "''" not in joined:
        out[:] = joined.split("\n")
    elif "''" not in joined and _SPECIAL_ESCAPE.search(joined.replace("\\\\", "")) is None:
        # Only escapes that stand for their own character (backslash, quotes): drop the escaping
        # backslashes in one pass over the column, after splitting off the escaped-backslash
        # pairs (left to right, as MySQL reads them).
        out[:] = "\\".join(s.replace("\\", "") for s in joined.split("\\\\")).split("\n")
    else:
        out[:] = [_unescape(p) if ("\\" in p or "''" in p) else p for p in joined.split("\n")]
    if null is not None:
        out[null] = None
    return out


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(lambda m: "'" if m.group(1) is None else _ESCAPES.get(m.group(1), m.group(1)), s)
