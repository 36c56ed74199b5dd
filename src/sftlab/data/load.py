"""load_conversations / iter_conversations: files, folders, globs and `datasets` -> Conversations.

Flow per file: reader (parse only) -> format detection (from the first row whose keys match a
format; or forced with format=) -> adapter + validation -> Conversation. Problems:
  on_error="raise": keep reading the file to collect up to 20 problems, then raise one DataError
                    (nothing more is yielded once a problem is seen).
  on_error="skip":  skip the row, count it by reason, write it to `rejects_path` (JSONL) if given.
A file that cannot be used at all (empty, unreadable, columns missing) is, in skip mode, skipped
whole and listed in `stats.skipped_files`. Loading nothing at all is always an error.

Images (multimodal rows, see formats.py): relative image paths resolve against the data file's folder,
or `image_dir` when given (for `datasets` sources: the current folder); every image is checked when
its row loads (missing, unreadable, remote while offline: a row problem like any other).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from sftlab.atomic import AtomicFile
from sftlab.conversation import Conversation
from sftlab.data.formats import (
    FIELD_NAMES,
    FORMATS,
    MESSAGE_KEY_NOTES,
    REQUIRED,
    TRAINING_FLAG_KEYS,
    ImageRefs,
    RowError,
    detect_format,
    formats_help,
    rename_columns,
    to_conversation,
)
from sftlab.data.readers import (
    EXTENSIONS,
    MAX_LINE_BYTES,
    FileError,
    RawRow,
    read_csv,
    read_dataset,
    read_json,
    read_jsonl,
    read_parquet,
    read_text,
)
from sftlab.errors import ConfigError, DataError, Problem

MAX_PROBLEMS_PER_FILE = 20
DETECT_ROWS = 50  # rows of a file looked at to detect its format before giving up
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

OnError = Literal["raise", "skip"]
# How to skip bad rows, in the config keys users write (docs/bad_input.md has the Python API's on_error=).
SKIP_HINT = ("skip bad rows with `data.on_error: skip` in the run config (`on_error: skip` in a curate config); "
             "skipped rows are counted by reason, and written to a file with `rejects: FILE` on the data source")
Source = str | Path | Any  # Any: a datasets.Dataset / IterableDataset / DatasetDict


IGNORED_KEY_EXAMPLES = 3  # row sources listed per ignored message key


@dataclass
class IgnoredKey:
    """One message key that loading dropped (a Message keeps only role and content)."""

    messages: int = 0  # messages that had the key (with a non-null value)
    rows: int = 0  # loaded rows with at least one such message
    not_trained_flags: int = 0  # training-flag keys only: assistant turns marked 0/false, which ARE trained
    examples: list[str] = field(default_factory=list)  # the first few row sources (file:line)

    def describe(self, key: str) -> str:
        shown = ", ".join(self.examples) + (", ..." if self.rows > len(self.examples) else "")
        text = f"{key} x {self.messages:,} in {self.rows:,} row(s) ({shown})"
        if key in MESSAGE_KEY_NOTES:
            text += f": {MESSAGE_KEY_NOTES[key]}"
        if key in TRAINING_FLAG_KEYS:
            text += f"; {self.not_trained_flags:,} assistant turn(s) marked 0/false are trained anyway"
        return text


@dataclass
class LoadStats:
    rows_read: int = 0
    loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped
    by_format: dict[str, int] = field(default_factory=dict)  # format -> rows loaded
    by_file: dict[str, int] = field(default_factory=dict)  # file -> rows loaded
    dropped_empty_system: int = 0  # empty system messages removed from loaded rows
    skipped_files: dict[str, str] = field(default_factory=dict)  # file -> reason (skip mode)
    ignored_files: list[str] = field(default_factory=list)  # files of folders and globs not loaded
    folders: dict[str, str] = field(default_factory=dict)  # folder -> which files were taken and skipped, by extension
    empty_rows: int = 0  # CSV rows whose every cell is empty (not data; counted, not loaded)
    empty_row_examples: list[str] = field(default_factory=list)  # their first few file:row
    unused_columns: dict[str, list[str]] = field(default_factory=dict)  # file -> `columns` values it does not have
    ignored_message_keys: dict[str, IgnoredKey] = field(default_factory=dict)  # key -> counts, loaded rows only
    images: int = 0  # image references in loaded rows
    image_rows: int = 0  # loaded rows with at least one image
    image_placeholders_added: int = 0  # rows given `<image>\n` before their first user turn (LLaVA rule)
    placeholder_without_images: int = 0  # rows with `<image>` in their text but no images (loaded as text)
    placeholder_examples: list[str] = field(default_factory=list)  # the first few of those (file:line)

    def add_ignored_keys(self, source: str, keys: dict[str, list[int]]) -> None:
        for key, (n_messages, n_not_trained) in keys.items():
            ik = self.ignored_message_keys.get(key)
            if ik is None:
                ik = self.ignored_message_keys[key] = IgnoredKey()
            ik.messages += n_messages
            ik.not_trained_flags += n_not_trained
            ik.rows += 1
            if len(ik.examples) < IGNORED_KEY_EXAMPLES:
                ik.examples.append(source)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        lines = [f"loaded {self.loaded:,} of {self.rows_read:,} rows read from {len(self.by_file)} file(s)"]
        if self.by_format:
            lines.append("  by format: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_format.items())))
        for name, n in self.by_file.items():
            lines.append(f"  {name}: {n:,}")
        if self.skipped:
            lines.append(f"  skipped {self.n_skipped:,} rows: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.skipped.items())))
        for name, reason in self.skipped_files.items():
            lines.append(f"  skipped file {name}: {reason}")
        if self.empty_rows:
            shown = ", ".join(self.empty_row_examples) + (", ..." if self.empty_rows > len(self.empty_row_examples) else "")
            lines.append(f"  skipped {self.empty_rows:,} empty CSV row(s) (every cell empty): {shown}")
        for name, cols in self.unused_columns.items():
            lines.append(f"  columns mapping not used in {name}: it has no column {', '.join(map(repr, cols))}")
        if self.dropped_empty_system:
            lines.append(f"  dropped {self.dropped_empty_system:,} empty system message(s)")
        if self.image_rows:
            lines.append(f"  images: {self.images:,} in {self.image_rows:,} row(s)")
        if self.image_placeholders_added:
            lines.append(f"  put `<image>\\n` before the first user turn of {self.image_placeholders_added:,} row(s) that had "
                         "images but no `<image>` placeholder (LLaVA's rule)")
        if self.placeholder_without_images:
            shown = ", ".join(self.placeholder_examples) + (", ..." if self.placeholder_without_images > len(self.placeholder_examples) else "")
            lines.append(f"  {self.placeholder_without_images:,} row(s) have `<image>` in their text but no images; loaded as "
                         f"text, the `<image>` kept as written ({shown})")
        if self.ignored_message_keys:
            lines.append("  ignored message keys (a message keeps only its role and content):")
            for key, ik in sorted(self.ignored_message_keys.items(), key=lambda kv: (-kv[1].messages, kv[0])):
                lines.append(f"    {ik.describe(key)}")
        for name, note in self.folders.items():
            lines.append(f"  folder {name}: {note}")
        loose = [f for f in self.ignored_files if not any(f.startswith(os.path.join(d, "")) for d in self.folders)]
        if loose:
            lines.append(f"  ignored {len(loose)} file(s) of unknown type: " + ", ".join(loose[:5])
                         + (" ..." if len(loose) > 5 else ""))
        return "\n".join(lines)


@dataclass
class LoadResult:
    conversations: list[Conversation]
    stats: LoadStats


class ConversationStream(Iterator[Conversation]):
    """What iter_conversations returns: iterate it for Conversations; `.stats` (a LoadStats)
    is updated as rows are read and is complete once the iteration ends."""

    def __init__(self, rows: Iterator[Conversation], stats: LoadStats):
        self._rows = rows
        self.stats = stats

    def __iter__(self) -> ConversationStream:
        return self

    def __next__(self) -> Conversation:
        return next(self._rows)

    def close(self) -> None:
        self._rows.close()


# ---- sources -------------------------------------------------------------------------------


@dataclass
class _Source:
    kind: str  # jsonl | json | csv | tsv | parquet | text | hf | hf_disk | hf_object
    display: str
    path: Path | None = None
    obj: Any = None
    explicit: bool = False  # a hub id written with the hf: prefix
    one_of_many: bool = False  # found in a folder or by a glob (not named by the user)


def _is_dataset_object(x: Any) -> bool:
    return type(x).__module__.startswith("datasets.")


def _ext_counts(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for n in names:
        ext = Path(n).suffix.lower() or "(no extension)"
        counts[ext] = counts.get(ext, 0) + 1
    return ", ".join(f"{ext} {n}" for ext, n in sorted(counts.items()))


def _listed(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


def _folder_files(folder: Path, display: str, ignored: list[str], notes: dict[str, str]) -> list[_Source]:
    """The data files of a folder (recursively, sorted). Text (.txt) files are loaded as documents
    only when the folder holds no structured data files (.jsonl .json .csv .tsv .parquet): beside
    those they are READMEs and notes, not training data. What was taken and what skipped is noted
    in `notes[display]`, by extension."""
    found: list[tuple[Path, str, str | None]] = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue  # hidden files (.gitattributes, .DS_Store) and folders (.git) are not data
        found.append((p, os.path.join(display, *rel.parts), EXTENSIONS.get(p.suffix.lower())))
    structured = any(kind not in (None, "text") for _, _, kind in found)
    out, text_skipped, unknown = [], [], []
    for p, name, kind in found:
        if kind is None:
            unknown.append(name)
        elif kind == "text" and structured:
            text_skipped.append(name)
        else:
            out.append(_Source(kind, name, p, one_of_many=True))
    ignored += text_skipped + unknown
    if out or text_skipped or unknown:
        note = f"took {len(out)} file(s) ({_ext_counts([s.display for s in out]) or 'none'})"
        if text_skipped:
            note += (f"; skipped {len(text_skipped)} text file(s) beside the structured data ({_listed(text_skipped)}): "
                     "give a .txt file's path (or a glob) as its own source to train on it")
        if unknown:
            note += f"; skipped {len(unknown)} file(s) of other types ({_ext_counts(unknown)}: {_listed(unknown)})"
        notes[display] = note
    return out


def resolve_sources(sources: Source | list[Source], ignored: list[str], folders: dict[str, str] | None = None) -> list[_Source]:
    """Paths, folders, globs, 'hf:' ids and dataset objects -> a flat, ordered list of sources.
    Files not taken go to `ignored`; per folder, what was taken and skipped goes to `folders`."""
    folders = {} if folders is None else folders
    items = sources if isinstance(sources, (list, tuple)) else [sources]
    if not items:
        raise DataError(Problem("sources", "", "no data sources given", "pass a file, folder, glob or dataset"))
    out: list[_Source] = []
    problems: list[Problem] = []
    for item in items:
        if _is_dataset_object(item):
            name = getattr(getattr(item, "info", None), "dataset_name", None) or "dataset"
            out.append(_Source("hf_object", f"hf:{name}", obj=item))
            continue
        if not isinstance(item, (str, Path)):
            problems.append(Problem(repr(item)[:60], "", f"unsupported source type {type(item).__name__}",
                                    "pass a path, a glob, 'hf:<dataset id>' or a datasets.Dataset"))
            continue
        text = str(item)
        if text.startswith("hf:"):
            out.append(_Source("hf", text, obj=text[3:], explicit=True))
            continue
        path = Path(text)
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            found = [m for m in matches if Path(m).is_file() and EXTENSIONS.get(Path(m).suffix.lower())]
            ignored += [m for m in matches if Path(m).is_file() and m not in found]
            if not found:
                problems.append(Problem(text, "", "glob matches no data files (.jsonl .json .csv .tsv .parquet .txt)",
                                        "check the pattern; use ** with a folder to search it recursively"))
            out += [_Source(EXTENSIONS[Path(m).suffix.lower()], m, Path(m), one_of_many=len(found) > 1) for m in found]
        elif path.is_dir():
            if (path / "dataset_info.json").exists() and (path / "state.json").exists():
                out.append(_Source("hf_disk", f"hf:{text}", path=path))  # written by Dataset.save_to_disk
                continue
            files = _folder_files(path, text, ignored, folders)
            if not files:
                problems.append(Problem(text, "", "folder holds no data files (.jsonl .json .csv .tsv .parquet .txt)",
                                        "point at the folder that holds the data"))
            out += files
        elif path.is_file():
            kind = EXTENSIONS.get(path.suffix.lower())
            if kind is None:
                problems.append(Problem(text, "", f"unsupported file type '{path.suffix}'",
                                        f"use one of {', '.join(EXTENSIONS)} (or rename the file)"))
            else:
                out.append(_Source(kind, text, path))
        elif HUB_ID.match(text) and not path.suffix.lower() in EXTENSIONS:
            out.append(_Source("hf", f"hf:{text}", obj=text))  # named by the user: a dataset id
        else:
            problems.append(Problem(text, "", "no such file or folder", "check the path (relative paths start at the current folder)"))
    if problems:
        raise DataError(problems)
    return out


def _open_dataset(src: _Source, split: str, streaming: bool) -> tuple[Any, str]:
    import datasets

    try:
        if src.kind == "hf_object":
            ds = src.obj
        elif src.kind == "hf_disk":
            ds = datasets.load_from_disk(str(src.path))
        else:
            ds = datasets.load_dataset(src.obj, split=split, streaming=streaming)
    except Exception as e:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        local = "" if src.kind != "hf" or src.explicit else (
            f"{src.obj!r} is not a local file or folder, so it was taken as a datasets id; ")
        raise FileError("unreadable_dataset", Problem(
            src.display, "", f"{local}cannot load with datasets: {type(e).__name__}: {str(e)[:300]}",
            "check the path or dataset id (a hub dataset must be cached to load offline); write hub ids as hf:org/name")) from None
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise FileError("unknown_split", Problem(
                src.display, "split", f"no split {split!r}; it has: {', '.join(ds)}",
                f"set `split:` on the data source to one of {', '.join(ds)}"))
        ds = ds[split]
    return ds, split


# ---- the loader ----------------------------------------------------------------------------


class _Loader:
    def __init__(self, sources: list[_Source], *, format: str, columns: dict[str, str] | None, on_error: OnError,
                 rejects_path: Path | None, split: str, streaming: bool, limit: int | None,
                 require_response: bool, max_line_bytes: int, text_blocks: bool, stats: LoadStats,
                 image_dir: Path | None = None):
        self.sources = sources
        self.format = format
        self.columns = columns
        self.on_error = on_error
        self.rejects_path = rejects_path
        self.split = split
        self.streaming = streaming
        self.limit = limit
        self.require_response = require_response
        self.max_line_bytes = max_line_bytes
        self.text_blocks = text_blocks
        self.stats = stats
        self.image_dir = image_dir
        self._rejects: AtomicFile | None = None

    # rejects: written to a temp file beside the target, moved into place at the end
    def _reject(self, source: str, reason: str, problems: list[Problem], record: Any = None, raw: str | None = None) -> None:
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        if self.rejects_path is None:
            return
        if self._rejects is None:
            self._rejects = AtomicFile(self.rejects_path, fsync=False)
        entry = {"source": source, "reason": reason, "problems": [str(p) for p in problems]}
        if record is not None:
            entry["row"] = record
        elif raw is not None:
            entry["raw"] = raw
        self._rejects.write(orjson.dumps(entry, default=_json_default, option=orjson.OPT_NON_STR_KEYS) + b"\n")

    def _finish_rejects(self) -> None:
        if self.rejects_path is None:
            return
        if self._rejects is None:  # an empty rejects file says "none", which a missing file does not
            self._rejects = AtomicFile(self.rejects_path, fsync=False)
        self._rejects.commit()

    def _done(self) -> bool:
        return self.limit is not None and self.stats.loaded >= self.limit

    def run(self) -> Iterator[Conversation]:
        ok = False
        try:
            for src in self.sources:
                if self._done():
                    break
                yield from self._one_source(src)
            ok = True
        finally:
            if ok or self.on_error == "skip":
                self._finish_rejects()
            elif self._rejects is not None:
                self._rejects.discard()
        if self.stats.loaded == 0 and self.limit != 0:
            names = ", ".join(s.display for s in self.sources[:3]) + (" ..." if len(self.sources) > 3 else "")
            raise DataError(Problem(names, "", "no conversations were loaded\n" + self.stats.summary(),
                                    "see the skipped counts above (and the rejects file, if one was set)"))

    def _rows(self, src: _Source) -> Iterator[RawRow]:
        if src.kind == "jsonl":
            return read_jsonl(src.path, src.display, self.max_line_bytes)
        if src.kind == "json":
            return read_json(src.path, src.display, self.max_line_bytes)
        if src.kind in ("csv", "tsv"):
            return read_csv(src.path, src.display, self.max_line_bytes, "," if src.kind == "csv" else "\t")
        if src.kind == "parquet":
            return read_parquet(src.path, src.display)
        if src.kind == "text":
            return read_text(src.path, src.display, self.text_blocks)
        ds, split = _open_dataset(src, self.split, self.streaming)
        name = src.display[3:]
        src.display = f"hf:{name}[{split}]"
        return read_dataset(ds, name, split)

    def _non_empty(self, rows: Iterator[RawRow]) -> Iterator[RawRow]:
        """Rows without the empty CSV rows, which are counted (and listed) instead."""
        for raw in rows:
            if raw.empty:
                self.stats.rows_read += 1
                self.stats.empty_rows += 1
                if len(self.stats.empty_row_examples) < 3:
                    self.stats.empty_row_examples.append(raw.source)
                continue
            yield raw

    def _check_mapped_columns(self, rows: Iterator[RawRow], src: _Source) -> Iterator[RawRow]:
        """`columns` names columns of the user's file: each must be a key of the file's rows
        (checked on the first DETECT_ROWS objects), or the mapping would do nothing, silently.
        A file found in a folder or by a glob that has none of them is noted, not refused
        (one mapping may be meant for some of the files)."""
        wanted = {theirs: ours for ours, theirs in self.columns.items()}
        buffer: list[RawRow] = []
        seen: set[str] = set()
        n_objects = 0
        for raw in rows:
            buffer.append(raw)
            if raw.error is None and isinstance(raw.record, dict):
                n_objects += 1
                seen.update(raw.record)
                if all(c in seen for c in wanted) or n_objects >= DETECT_ROWS:
                    break
        missing = [c for c in wanted if c not in seen]
        if missing and n_objects:
            if src.one_of_many and len(missing) == len(wanted):
                self.stats.unused_columns[src.display] = missing
            else:
                looked = "the file" if n_objects < DETECT_ROWS else f"the first {n_objects} rows"
                pairs = ", ".join(f"{wanted[c]} -> {c!r}" for c in missing)
                raise FileError("missing_mapped_column", Problem(
                    src.display, "columns",
                    f"the columns mapping names column(s) that {looked} does not have ({pairs}); its columns: "
                    f"{', '.join(sorted(map(str, seen)))}",
                    "write each column name as it is in the file: `columns: {OUR_FIELD: YOUR_COLUMN}` on the data "
                    "source, or remove the mapping (docs/config.md)"))
        yield from buffer
        yield from rows

    def _with_format(self, rows: Iterator[RawRow], src: _Source) -> Iterator[tuple[str, RawRow]]:
        """Tag rows with the file's format: forced, or detected from the first row that matches."""
        forced = "text" if src.kind == "text" else (None if self.format == "auto" else self.format)
        if src.kind in ("csv", "tsv"):
            rows = self._non_empty(rows)
        if self.columns and src.kind != "text":
            rows = self._check_mapped_columns(rows, src)
        buffer: list[RawRow] = []
        fmt = forced
        n_objects = 0
        first_keys: list[str] | None = None
        n_rows = 0
        for raw in rows:
            self.stats.rows_read += 1
            n_rows += 1
            if fmt is not None:
                if raw.tabular and first_keys is None:
                    first_keys = list(raw.record)
                    self._check_columns(first_keys, fmt, src)
                yield fmt, raw
                continue
            buffer.append(raw)
            if raw.error is None and isinstance(raw.record, dict):
                n_objects += 1
                keys = rename_columns(raw.record, self.columns).keys()
                if first_keys is None:
                    first_keys = list(raw.record)
                fmt = detect_format(keys)
                if fmt is None and raw.tabular:
                    self._check_columns(first_keys, None, src)
                if fmt is not None:
                    for b in buffer:
                        yield fmt, b
                    buffer = []
                elif n_objects >= DETECT_ROWS:
                    break
        if fmt is not None:
            return
        if n_rows == 0:
            what = "only empty rows" if self.stats.empty_rows and src.kind in ("csv", "tsv") else "only blank lines"
            raise FileError("empty_file", Problem(src.display, "", f"file has no rows ({what})",
                                                  "remove the file or add rows"))
        for b in buffer:  # rows that failed to parse are still reported, in order
            if b.error is not None:
                yield "", b
        if n_objects:
            raise FileError("unknown_format", Problem(
                src.display, "", f"cannot tell the format from the keys {first_keys} (first of {n_objects} rows looked at); "
                f"formats need: {formats_help()}",
                f"name the format and map your columns on the data source, e.g. {self._suggest(first_keys)}"))

    @staticmethod
    def _suggest(keys: list[str] | None) -> str:
        """An example fix in the user's words: the YAML keys of a data source."""
        keys = [str(k) for k in (keys or []) if k not in ("id", "meta")]
        if len(keys) >= 2:
            example = f"`format: alpaca` with `columns: {{instruction: {keys[0]}, output: {keys[1]}}}`"
        elif keys:
            example = f"`format: text` with `columns: {{text: {keys[0]}}}`"
        else:
            example = "`format: text`"
        return f"{example} (data.train[] in a run config; docs/config.md)"

    def _check_columns(self, header: list[str], fmt: str | None, src: _Source) -> None:
        """CSV/Parquet: the columns a format needs must all be there (after the columns= mapping)."""
        keys = rename_columns(dict.fromkeys(header), self.columns).keys()
        needed = {fmt: REQUIRED[fmt]} if fmt else REQUIRED
        if fmt and all(k in keys for k in REQUIRED[fmt]):
            return
        need = "; ".join(f"{f} needs {', '.join(REQUIRED[f])}" for f in needed)
        mapped = f" (after the columns mapping {self.columns})" if self.columns else ""
        missing = f"missing {', '.join(k for k in REQUIRED[fmt] if k not in keys)}; " if fmt else ""
        raise FileError("missing_columns", Problem(
            src.display, "", f"{missing}the file has columns {', '.join(header)}{mapped}, but {need}",
            f"rename the columns, or map them on the data source, e.g. {self._suggest(header)}"))

    def _image_refs(self, src: _Source) -> ImageRefs:
        """Relative image paths start at image_dir, else the data file's folder (datasets: the current folder)."""
        if self.image_dir is not None:
            return ImageRefs(self.image_dir, from_image_dir=True)
        file = src.path is not None and src.kind not in ("hf", "hf_disk", "hf_object")
        return ImageRefs(src.path.parent if file else Path.cwd())

    def _one_source(self, src: _Source) -> Iterator[Conversation]:
        problems: list[Problem] = []
        raising = self.on_error == "raise"
        by_file = 0
        images = self._image_refs(src)
        try:
            for fmt, raw in self._with_format(self._rows(src), src):
                error = raw.error
                conv = None
                if error is None:
                    try:
                        rec = rename_columns(raw.record, self.columns)
                        conv, notes = to_conversation(rec, fmt, raw.source, require_response=self.require_response,
                                                      detected=self.format == "auto", images=images)
                    except RowError as e:
                        error = e
                if error is not None:
                    if raising:
                        problems += [p for _, p in error.problems]
                        if len(problems) >= MAX_PROBLEMS_PER_FILE:
                            break
                    else:
                        self._reject(raw.source, error.reason, [p for _, p in error.problems], raw.record, raw.raw)
                    continue
                if problems:
                    continue  # raise mode: a problem was seen, keep looking for more, yield no more
                self.stats.loaded += 1
                self.stats.by_format[conv.meta["format"]] = self.stats.by_format.get(conv.meta["format"], 0) + 1
                self.stats.dropped_empty_system += notes.dropped_system
                if notes.ignored_keys:
                    self.stats.add_ignored_keys(raw.source, notes.ignored_keys)
                if conv.images:
                    self.stats.images += len(conv.images)
                    self.stats.image_rows += 1
                    self.stats.image_placeholders_added += notes.placeholders_added
                elif notes.placeholder_without_images:
                    self.stats.placeholder_without_images += 1
                    if len(self.stats.placeholder_examples) < 3:
                        self.stats.placeholder_examples.append(raw.source)
                by_file += 1
                self.stats.by_file[src.display] = by_file
                yield conv
                if self._done():
                    return
        except FileError as e:
            if raising:
                problems.append(e.problem)
            else:
                self.stats.skipped_files[src.display] = f"{e.reason}: {e.problem.message}"
                self._reject(src.display, e.reason, [e.problem])
        if problems:
            more = " (stopped looking after that many)" if len(problems) >= MAX_PROBLEMS_PER_FILE else ""
            raise DataError(problems[:MAX_PROBLEMS_PER_FILE], header=(
                f"{len(problems[:MAX_PROBLEMS_PER_FILE])} problem(s) in {src.display}{more}; fix them, or {SKIP_HINT}:"))


def _json_default(value: Any) -> Any:
    """Rejects file: image bytes and decoded images are shown by size, not written out."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value):,} bytes>"
    if hasattr(value, "size") and hasattr(value, "mode") and hasattr(value, "save"):
        return f"<image {value.mode} {value.size[0]}x{value.size[1]}>"
    return str(value)


# ---- public API ----------------------------------------------------------------------------


def _check_args(format: str, columns: dict[str, str] | None, on_error: str, limit: int | None,
                image_dir: str | Path | None = None) -> None:
    problems = []
    if format != "auto" and format not in FORMATS:
        problems.append(f"format={format!r} is not one of auto, {', '.join(FORMATS)}")
    if on_error not in ("raise", "skip"):
        problems.append(f"on_error={on_error!r} must be 'raise' or 'skip'")
    if columns is not None:
        if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
            problems.append("columns must map our field name -> your column name, e.g. {'instruction': 'question'}")
        else:
            for ours in columns:
                if ours not in FIELD_NAMES:
                    problems.append(f"columns key {ours!r} is not a field we know; keys are our field names: "
                                    f"{', '.join(FIELD_NAMES)} (values are your column names)")
    if limit is not None and limit < 0:
        problems.append(f"limit={limit} must be >= 0")
    if image_dir is not None and not Path(image_dir).expanduser().is_dir():
        what = "is not a folder" if Path(image_dir).expanduser().exists() else "does not exist"
        problems.append(f"image_dir={str(image_dir)!r} {what} (absolute: {Path(image_dir).expanduser().absolute()}); "
                        "set it to the folder that relative image paths start from, or remove it to use the data file's folder")
    if problems:
        raise ConfigError("bad data loading options:\n" + "\n".join(f"  - {p}" for p in problems))


def iter_conversations(
    sources: Source | list[Source],
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "raise",
    rejects_path: str | Path | None = None,
    split: str = "train",
    streaming: bool = False,
    limit: int | None = None,
    require_response: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    text_blocks: bool = False,
    image_dir: str | Path | None = None,
) -> ConversationStream:
    """Stream Conversations from files, folders, globs, 'hf:<id>' or dataset objects.

    Returns a ConversationStream: iterate it; its `.stats` fills in as you go. JSONL, CSV and
    Parquet are read row by row (memory stays flat for any size); JSON files are read whole.
    require_response=False accepts prompt-only rows (no assistant turn / ending on a user turn),
    for evaluation prompts. text_blocks=True splits .txt files into one document per
    blank-line-separated block (default: one document per file).
    image_dir: the folder relative image paths start from (default: each data file's folder).
    Arguments and paths are checked now; rows are read as you iterate.
    """
    _check_args(format, columns, on_error, limit, image_dir)
    stats = LoadStats()
    srcs = resolve_sources(sources, stats.ignored_files, stats.folders)
    loader = _Loader(srcs, format=format, columns=columns, on_error=on_error,
                     rejects_path=Path(rejects_path) if rejects_path is not None else None, split=split,
                     streaming=streaming, limit=limit, require_response=require_response,
                     max_line_bytes=max_line_bytes, text_blocks=text_blocks, stats=stats,
                     image_dir=Path(image_dir).expanduser() if image_dir is not None else None)
    return ConversationStream(loader.run(), stats)


def load_conversations(
    sources: Source | list[Source],
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    on_error: OnError = "raise",
    rejects_path: str | Path | None = None,
    split: str = "train",
    streaming: bool = False,
    limit: int | None = None,
    require_response: bool = True,
    max_line_bytes: int = MAX_LINE_BYTES,
    text_blocks: bool = False,
    image_dir: str | Path | None = None,
) -> LoadResult:
    """Load every Conversation into a list (see iter_conversations for the arguments)."""
    stream = iter_conversations(sources, format=format, columns=columns, on_error=on_error, rejects_path=rejects_path,
                                split=split, streaming=streaming, limit=limit, require_response=require_response,
                                max_line_bytes=max_line_bytes, text_blocks=text_blocks, image_dir=image_dir)
    return LoadResult(list(stream), stream.stats)
