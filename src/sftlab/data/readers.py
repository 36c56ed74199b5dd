"""Readers: a file (or a `datasets` dataset) -> a stream of `RawRow`s, each tagged with its source.

Readers only parse; they do not know the formats. A row that cannot be parsed (bad JSON, bad
UTF-8, an over-long line) comes out as a RawRow carrying a RowError, so the loader can count it
and keep going. A problem that spoils the whole file (empty, unreadable) raises `FileError`.

Sources: JSONL: "path:LINE" (1-based). JSON: "path:[i]" or "path:data[i]" (0-based).
CSV/TSV: "path:row N" with the header as row 1, as a spreadsheet shows it.
Parquet: "path:row N" (0-based, as pandas/pyarrow index it). Text: "path:LINE" of the block.
datasets: "hf:NAME[SPLIT][i]" (0-based).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sftlab.errors import DataError, Problem
from sftlab.data.formats import RowError

MAX_LINE_BYTES = 64 * 1024 * 1024  # a single JSONL line above this is reported, not loaded
SNIPPET_CHARS = 80
BOM = b"\xef\xbb\xbf"
NL = b"\n"

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}


@dataclass(slots=True)
class RawRow:
    source: str
    record: Any = None
    error: RowError | None = None
    raw: str | None = None  # the unparsed text, kept for the rejects file
    tabular: bool = False  # CSV/Parquet: every row has the same keys (the columns)
    empty: bool = False  # a CSV row whose every cell is empty: not a row of data, counted by the loader


class FileError(Exception):
    """The whole file cannot be used (empty, unreadable, columns missing...)."""

    def __init__(self, reason: str, problem: Problem):
        self.reason = reason
        self.problem = problem
        super().__init__(str(problem))


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def snippet(text: str) -> str:
    shown = _printable(text[:SNIPPET_CHARS])
    more = f" ... ({len(text)} chars in all)" if len(text) > SNIPPET_CHARS else ""
    return f"`{shown}`{more}"


def _row_error(reason: str, where: str, message: str, fix: str, field: str = "") -> RowError:
    return RowError([(reason, Problem(where, field, message, fix))])


def not_utf8_message(data: bytes, err: UnicodeDecodeError, base_offset: int) -> str:
    bad = data[err.start : err.start + 4]
    return f"not valid UTF-8: byte 0x{bad[:1].hex()} at byte offset {base_offset + err.start} of the file"


NOT_UTF8_FIX = "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)"


def parse_json(data: bytes, where: str, line_offset: int = 0, line_label: str = "line") -> Any:
    """Parse JSON bytes (orjson: fast path). On failure, explain with the stdlib's message,
    which gives line and column, plus the first 80 chars of the offending line."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as fast_error:
        orjson_msg = str(fast_error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _row_error("not_utf8", where, not_utf8_message(data, e, line_offset), NOT_UTF8_FIX) from None
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        lines = text.splitlines()
        bad_line = lines[e.lineno - 1] if 0 < e.lineno <= len(lines) else text
        at = f"line {e.lineno}, column {e.colno}" if line_label == "file" else f"column {e.colno}"
        raise _row_error(
            "malformed_json", f"{where}:{e.lineno}" if line_label == "file" else where, f"not valid JSON: {e.msg} at {at}: {snippet(bad_line)}",
            "fix the JSON syntax (each line of a .jsonl file must be one complete JSON object)",
        ) from None
    except RecursionError:
        raise _row_error("malformed_json", where, "not valid JSON: nested too deeply", "flatten the structure") from None
    # Python's json accepts it but orjson does not: NaN/Infinity, lone surrogates, huge ints.
    raise _row_error("malformed_json", where, f"not valid JSON: {orjson_msg}: {snippet(text)}",
                     "remove NaN/Infinity, unpaired \\ud800-style escapes and integers above 2^64")


# ---- JSONL ---------------------------------------------------------------------------------


def read_jsonl(path: Path, display: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[RawRow]:
    """Stream a JSONL file line by line; a line over `max_line_bytes` is reported without being
    held in memory (it is read past in 1 MiB chunks)."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise FileError("unreadable_file", Problem(display, "", f"cannot open: {e.strerror}", "check the path and permissions")) from None
    with f:
        offset = 0
        lineno = 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                break
            lineno += 1
            where = f"{display}:{lineno}"
            start = offset
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                total = len(line)
                while chunk := f.readline(1 << 20):
                    total += len(chunk)
                    if chunk.endswith(b"\n"):
                        break
                offset += total
                yield RawRow(where, error=_row_error(
                    "line_too_long", where,
                    f"line is {total:,} bytes, over the limit of {max_line_bytes:,} bytes; not loaded",
                    "split it into smaller rows (a line over the limit is never read into memory)"),
                    raw=f"<{total} bytes not loaded>")
                continue
            offset += len(line)
            if lineno == 1 and line.startswith(BOM):
                line = line[3:]
                start += 3
            body = line.strip()
            if not body:
                continue  # blank lines are not rows
            lead = len(line) - len(line.lstrip())
            try:
                yield RawRow(where, parse_json(body, where, start + lead))
            except RowError as e:
                yield RawRow(where, error=e, raw=body.decode("utf-8", "replace"))


def read_jsonl_objects(path: str | Path, shape: str) -> tuple[list[tuple[str, dict]], list[Problem]]:
    """A small JSONL file of our own kind (built-in corpora, prompt sets) -> ([(file:line, object)],
    [problems]). Lines that are not JSON, not UTF-8 or not a JSON object become Problems naming
    file:line (`shape` is the object to write, shown in the fix), so the caller can add its own
    field checks and raise everything at once. Blank lines are skipped. A file that cannot be
    opened raises DataError."""
    file = Path(path)
    rows: list[tuple[str, dict]] = []
    problems: list[Problem] = []
    try:
        for raw in read_jsonl(file, str(file)):
            if raw.error is not None:
                problems += [p for _, p in raw.error.problems]
            elif not isinstance(raw.record, dict):
                problems.append(Problem(raw.source, "", f"expected a JSON object, got {type(raw.record).__name__}",
                                        f"write one object per line: {shape}"))
            else:
                rows.append((raw.source, raw.record))
    except FileError as e:
        raise DataError(e.problem) from None
    return rows, problems


# ---- JSON ----------------------------------------------------------------------------------


def _looks_like_jsonl(data: bytes) -> bool:
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(orjson.loads(lines[0]), dict)
    except orjson.JSONDecodeError:
        return False


def _rows_of(parsed: Any, display: str) -> tuple[list, str]:
    """A JSON document -> (rows, key). Top-level list, or an object holding one list of rows."""
    if isinstance(parsed, list):
        return parsed, ""
    if isinstance(parsed, dict):
        from sftlab.data.formats import detect_format

        if detect_format(parsed):  # a single example written as a whole file
            return [parsed], ""
        lists = [k for k, v in parsed.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v[:10])]
        if len(lists) == 1:
            return parsed[lists[0]], lists[0]
        keys = ", ".join(map(str, parsed)) or "none"
        raise FileError("no_rows_list", Problem(
            display, "", f"a JSON object must hold exactly one list of rows; found {len(lists)} (keys: {keys})",
            'write a JSON list of rows, or an object like {"data": [...]}'))
    raise FileError("no_rows_list", Problem(
        display, "", f"expected a JSON list of rows, got {type(parsed).__name__}", "write a JSON list of rows"))


def read_json(path: Path, display: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[RawRow]:
    """A whole-document JSON file (read at once). A .json file that is really JSONL is streamed."""
    data = path.read_bytes()
    if not data.strip():
        raise FileError("empty_file", Problem(display, "", "file is empty", "remove the file or fill it with rows"))
    if data.startswith(BOM):
        data = data[3:]
    try:
        parsed = parse_json(data, display, line_label="file")
    except RowError as e:
        if _looks_like_jsonl(data):
            yield from read_jsonl(path, display, max_line_bytes)
            return
        reason, problem = e.problems[0]
        if reason == "not_utf8":
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as u:
                problem.where = f"{display}:{data.count(NL, 0, u.start) + 1}"
        raise FileError(reason, problem) from None
    rows, key = _rows_of(parsed, display)
    if not rows:
        raise FileError("empty_file", Problem(display, "", "the list of rows is empty", "remove the file or add rows"))
    for i, rec in enumerate(rows):
        yield RawRow(f"{display}:{key}[{i}]", rec)


# ---- CSV / TSV -----------------------------------------------------------------------------


def read_csv(path: Path, display: str, max_line_bytes: int = MAX_LINE_BYTES, delimiter: str = ",") -> Iterator[RawRow]:
    """Stream CSV records with the stdlib csv module (quoted multi-line cells work). Cells are
    strings; an empty cell is "". Bytes that are not UTF-8 spoil only the record they are in."""
    csv.field_size_limit(max(csv.field_size_limit(), max_line_bytes))
    bad: list[str] = []  # not-UTF-8 messages seen since the last record

    def lines(f) -> Iterator[str]:
        offset = 0
        first = True
        for raw in f:
            if first and raw.startswith(BOM):
                raw, offset = raw[3:], 3
            first = False
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad.append(not_utf8_message(raw, e, offset))
                yield raw.decode("utf-8", "replace")
            offset += len(raw)

    with open(path, "rb") as f:
        reader = csv.reader(lines(f), delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise FileError("malformed_csv", Problem(f"{display}:row 1", "", f"cannot read the header: {e}", "fix the CSV header")) from None
        if header is None or not any(h.strip() for h in header):
            raise FileError("empty_file", Problem(display, "", "file is empty (no header row)", "remove the file or add a header and rows"))
        if bad:
            raise FileError("not_utf8", Problem(f"{display}:row 1", "", bad[0], NOT_UTF8_FIX))
        header = [h.strip() for h in header]
        row_no = 1
        any_rows = False
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                row_no += 1
                bad.clear()
                yield RawRow(f"{display}:row {row_no}", error=_row_error(
                    "malformed_csv", f"{display}:row {row_no}", f"cannot parse CSV: {e}", "fix the quoting of this row"))
                continue
            row_no += 1
            where = f"{display}:row {row_no}"
            if bad:
                msg = bad[0]
                bad.clear()
                yield RawRow(where, error=_row_error("not_utf8", where, msg, NOT_UTF8_FIX), raw=delimiter.join(values))
                continue
            if not values:
                continue  # a blank line
            if not any(v.strip() for v in values):
                yield RawRow(where, empty=True)  # e.g. ",,," left by a spreadsheet: counted and reported
                continue
            any_rows = True
            if len(values) != len(header):
                yield RawRow(where, error=_row_error(
                    "malformed_csv", where, f"row has {len(values)} cells but the header has {len(header)} columns",
                    "quote cells that contain the delimiter or newlines"), raw=delimiter.join(values))
                continue
            yield RawRow(where, dict(zip(header, values)), tabular=True)
        if not any_rows:
            raise FileError("empty_file", Problem(display, "", f"has a header ({', '.join(header)}) but no rows", "add rows or remove the file"))


# ---- Parquet -------------------------------------------------------------------------------


def read_parquet(path: Path, display: str, batch_rows: int = 1024) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    def unreadable(e: Exception) -> FileError:
        return FileError("unreadable_parquet", Problem(
            display, "", f"cannot read Parquet: {type(e).__name__}: {e}",
            "check that the file is a complete Parquet file (re-export it, e.g. df.to_parquet(path))"))

    try:
        pf = pq.ParquetFile(path)
        n = pf.metadata.num_rows
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise unreadable(e) from None
    if n == 0:
        raise FileError("empty_file", Problem(display, "", "Parquet file has no rows", "remove the file or add rows"))
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for rec in batch.to_pylist():
                yield RawRow(f"{display}:row {i}", rec, tabular=True)
                i += 1
    except Exception as e:
        raise unreadable(e) from None


# ---- plain text ----------------------------------------------------------------------------


def read_text(path: Path, display: str, blocks: bool = False) -> Iterator[RawRow]:
    """A .txt file: one document, or (blocks=True) one document per blank-line-separated block."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FileError("not_utf8", Problem(f"{display}:{line}", "", not_utf8_message(data, e, 0), NOT_UTF8_FIX)) from None
    if not text.strip():
        raise FileError("empty_file", Problem(display, "", "file is empty", "remove the file or write the text"))
    if not blocks:
        yield RawRow(f"{display}:1", {"text": text})
        return
    block: list[str] = []
    start = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not block:
                start = n
            block.append(line)
        elif block:
            yield RawRow(f"{display}:{start}", {"text": "\n".join(block)})
            block = []
    if block:
        yield RawRow(f"{display}:{start}", {"text": "\n".join(block)})


# ---- datasets ------------------------------------------------------------------------------


def _has_image_feature(feature: Any) -> bool:
    """A `datasets.Image` anywhere in a feature (top level, in a List/Sequence, in a dict)."""
    if type(feature).__name__ == "Image" and type(feature).__module__.startswith("datasets."):
        return True
    if isinstance(feature, dict):
        return any(_has_image_feature(f) for f in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(_has_image_feature(f) for f in feature)
    inner = getattr(feature, "feature", None)
    return inner is not None and _has_image_feature(inner)


def _undecoded(ds: Any) -> Any:
    """A dataset with image columns, iterated without decoding them: each image comes as its
    {"bytes", "path"} struct (the original file bytes, kept as they are), not as a PIL image that
    would have to be encoded again. Rows keep their order. Datasets without images are unchanged."""
    features = getattr(ds, "features", None)
    if not features or not _has_image_feature(dict(features)):
        return ds
    try:
        it = ds if hasattr(ds, "decode") else ds.to_iterable_dataset()
        return it.decode(False)
    except Exception:  # noqa: BLE001 - an older `datasets`: decoded PIL images are stored as PNG instead
        return ds


def read_dataset(ds: Any, name: str, split: str) -> Iterator[RawRow]:
    for i, rec in enumerate(_undecoded(ds)):
        yield RawRow(f"hf:{name}[{split}][{i}]", rec)
