"""LLaVA-style visual instruction data (Liu et al. 2023, "Visual Instruction Tuning") from a
text-only teacher: the teacher is told what one image shows -- its captions and, where present,
object boxes in normalised coordinates -- and writes as if it saw the image:

- conversation: a multi-turn conversation about the image (objects, counts, actions, positions),
- detail:       a rich descriptive paragraph (the user turn is one of a few fixed requests),
- reasoning:    one question that takes reasoning beyond what is visible, with a step-by-step answer.

Input: JSONL, one image a line (`read_records`):

    {"image": "coco/000000123.jpg", "captions": ["A cat on a red sofa.", ...],
     "boxes": [{"label": "cat", "box": [0.12, 0.30, 0.56, 0.88]}], "id": "optional"}

Boxes are [x0, y0, x1, y1], normalised to 0-1; pixel boxes need the record's "width" and "height".
Each row is a `Conversation` whose first user turn starts with IMAGE_PLACEHOLDER and whose
`images` is (the image ref,), relative paths made absolute against `image_root` (default: the
input file's folder). Row ids are `llava-<record id>-<type>-<sample>` (record id: the record's
"id", else a hash of its image ref), so a rerun skips every (image, type, sample) already on disk;
rows the teacher's answer could not be parsed into are counted by reason (`<type>:<reason>`) and
recorded in the state file so they are not retried; failed calls are counted and retried.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sftlab.conversation import IMAGE_PLACEHOLDER, Conversation
from sftlab.errors import DataError, Problem
from sftlab.synth import prompts
from sftlab.synth.backends import ChatBackend
from sftlab.synth.config import LlavaConfig, SynthConfig
from sftlab.synth.filters import REFUSAL
from sftlab.synth.report import SynthReport
from sftlab.synth.store import JsonlOutput, ProgressState, state_path

URL_PREFIXES = ("http://", "https://", "data:")


def prompt_version(kind: str) -> str:
    """The prompt hash recorded in each row's meta: every text that shapes a `kind` row."""
    parts = [prompts.LLAVA_SYSTEM, prompts.LLAVA_TASKS[kind], prompts.LLAVA_EXAMPLE_CONTEXT, prompts.LLAVA_EXAMPLES[kind],
             prompts.LLAVA_CONTEXT_NOTE]
    if kind == "detail":
        parts += prompts.LLAVA_DETAIL_INSTRUCTIONS
    return prompts.prompt_hash(*parts)


# ---- input records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    key: str  # the stable part of row ids
    image: str  # as written in the input
    ref: str  # absolute path or URL: what Conversation.images holds
    captions: tuple[str, ...]
    boxes: tuple[tuple[str, tuple[float, float, float, float]], ...]  # normalised
    where: str  # input file:line


def resolve_image(ref: str, root: str) -> str:
    if ref.startswith(URL_PREFIXES):
        return ref
    if root.startswith(("http://", "https://")):
        return root.rstrip("/") + "/" + ref.lstrip("/")
    p = Path(ref).expanduser()
    return os.path.abspath(p if p.is_absolute() else Path(root) / p)


def _key(rec: dict) -> str:
    if rec.get("id") is not None:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rec["id"]))
    return hashlib.sha1(rec["image"].encode("utf-8")).hexdigest()[:12]


def _boxes(rec: dict, where: str, problems: list[Problem]) -> list[tuple[str, tuple[float, float, float, float]]]:
    raw = rec.get("boxes") or []
    fix = 'each box is {"label": "cat", "box": [x0, y0, x1, y1]}'
    if not isinstance(raw, list):
        problems.append(Problem(where, "boxes", f"expected a list, got {type(raw).__name__}", fix))
        return []
    w, h = rec.get("width"), rec.get("height")
    out = []
    for i, b in enumerate(raw):
        field = f"boxes[{i}]"
        if not isinstance(b, dict) or not isinstance(b.get("label"), str) or not b["label"].strip():
            problems.append(Problem(where, field, f"a box needs a non-empty string label, got {b!r:.80}", fix))
            continue
        xy = b.get("box")
        if (not isinstance(xy, list) or len(xy) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in xy)):
            problems.append(Problem(where, field, f"box must be 4 numbers [x0, y0, x1, y1], got {xy!r:.80}", fix))
            continue
        x0, y0, x1, y1 = (float(v) for v in xy)
        if x1 < x0 or y1 < y0 or min(xy) < 0:
            problems.append(Problem(where, field, f"box {xy} is not [x0, y0, x1, y1] with x0 <= x1, y0 <= y1, all >= 0",
                                    "COCO's [x, y, width, height] must be converted to corners first"))
            continue
        if max(xy) > 1:
            if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
                problems.append(Problem(where, field, f"box {xy} is in pixels but the record has no width/height",
                                        'add "width" and "height" (pixels) to the record, or give boxes normalised to 0-1'))
                continue
            x0, x1, y0, y1 = x0 / w, x1 / w, y0 / h, y1 / h
            if max(x1, y1) > 1.0 + 1e-6:
                problems.append(Problem(where, field, f"box {xy} lies outside the {w}x{h} image", "check width/height"))
                continue
        out.append((b["label"].strip(), (x0, y0, x1, y1)))
    return out


def read_records(path: str | Path, image_root: str | None = None, limit: int | None = None) -> list[ImageRecord]:
    """The input records, validated; every problem (with file:line) is raised at once as DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(Problem(str(path), "", "no such file", "set llava.input to a JSONL file of image records"))
    root = image_root or str(path.parent)
    problems: list[Problem] = []
    records: list[ImageRecord] = []
    seen: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                problems.append(Problem(where, "", f"not valid JSON: {e}"))
                continue
            if not isinstance(rec, dict):
                problems.append(Problem(where, "", f"expected a JSON object, got {type(rec).__name__}"))
                continue
            n_before = len(problems)
            if not isinstance(rec.get("image"), str) or not rec["image"].strip():
                problems.append(Problem(where, "image", f"needs a non-empty image path or URL, got {rec.get('image')!r:.80}"))
            caps = rec.get("captions", [])
            if isinstance(caps, str):
                caps = [caps]
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                problems.append(Problem(where, "captions", f"expected a list of strings, got {caps!r:.80}"))
                caps = []
            caps = [c.strip() for c in caps if c.strip()]
            boxes = _boxes(rec, where, problems)
            if len(problems) > n_before:
                continue
            if not caps and not boxes:
                problems.append(Problem(where, "captions", "the record has no captions and no boxes: nothing to write about",
                                        'add "captions": ["..."]'))
                continue
            key = _key(rec)
            if key in seen:
                problems.append(Problem(where, "id" if rec.get("id") is not None else "image",
                                        f"record id {key!r} is also the id of {seen[key]}",
                                        "merge the captions of one image into one record, or give each record its own \"id\""))
                continue
            seen[key] = where
            records.append(ImageRecord(key, rec["image"], resolve_image(rec["image"].strip(), root), tuple(caps),
                                       tuple(boxes), where))
    if problems:
        raise DataError(problems, header=f"{len(problems)} problem(s) in the image records {path}:")
    return records


# ---- what the teacher sees ----------------------------------------------------------------------


def image_context(rec: ImageRecord) -> str:
    lines = []
    if rec.captions:
        lines.append("Captions:")
        lines += [f"- {c}" for c in rec.captions]
    if rec.boxes:
        lines.append("Objects:")
        lines += [f"- {label}: [{x0:.3f}, {y0:.3f}, {x1:.3f}, {y1:.3f}]" for label, (x0, y0, x1, y1) in rec.boxes]
    return "\n".join(lines)


def teacher_messages(kind: str, rec: ImageRecord, lc: LlavaConfig) -> list[dict]:
    system = prompts.LLAVA_SYSTEM + "\n\n" + prompts.LLAVA_TASKS[kind].format(min_turns=lc.min_turns, max_turns=lc.max_turns)
    msgs = [{"role": "system", "content": system}]
    if lc.few_shot:
        msgs += [{"role": "user", "content": f"{prompts.LLAVA_CONTEXT_NOTE}\n{prompts.LLAVA_EXAMPLE_CONTEXT}"},
                 {"role": "assistant", "content": prompts.LLAVA_EXAMPLES[kind]}]
    msgs.append({"role": "user", "content": f"{prompts.LLAVA_CONTEXT_NOTE}\n{image_context(rec)}"})
    return msgs


# ---- parsing the teacher's answer ---------------------------------------------------------------

# "Question: ...", "**Q2:** ...", "- A: ..." ; the label starts a line, the text may go on over lines
_LABEL = re.compile(r"^[\s>*_#-]*(question|answer|q|a)\s*\d*\s*[*_]*\s*:\s*[*_]*\s*(.*)$", re.IGNORECASE)
# a text-only teacher giving itself away (the student would learn to talk about its captions)
_LEAK = re.compile(r"\b(captions?|bounding box(es)?|coordinates?)\b|\[\s*[01]?\.\d+\s*,\s*[01]?\.\d+", re.IGNORECASE)
_NO_SIGHT = re.compile(r"\b(can ?not|can't|unable to) (see|view|look at|access) (the |this |an |any )?(image|picture|photo)"
                       r"|\bdo(n't| not) have access to (the |this |an )?(image|picture|photo)|\bas an ai\b", re.IGNORECASE)


def parse_qa(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """Question/Answer pairs, or ([], reason). Text before the first label (a preamble) is ignored."""
    turns: list[list] = []  # [role, lines]
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m:
            turns.append(["q" if m.group(1).lower().startswith("q") else "a", [m.group(2)]])
        elif turns:
            turns[-1][1].append(line)
    if not turns:
        return [], "no_question_answer_format"
    pairs = []
    for i, (role, lines) in enumerate(turns):
        if role != ("q" if i % 2 == 0 else "a"):
            return [], "turns_out_of_order"
        if not "\n".join(lines).strip():
            return [], "empty_turn"
    if len(turns) % 2:
        return [], "question_without_answer"  # often a reply cut off by max_tokens
    for i in range(0, len(turns), 2):
        pairs.append(("\n".join(turns[i][1]).strip(), "\n".join(turns[i + 1][1]).strip()))
    return pairs, None


def _text_problem(texts: list[str]) -> str | None:
    joined = "\n".join(texts)
    if IMAGE_PLACEHOLDER in joined:
        return "contains_image_placeholder"
    if _LEAK.search(joined):
        return "mentions_captions_or_boxes"
    if _NO_SIGHT.search(joined) or (REFUSAL.search(joined) and len(joined.split()) < 80):
        return "refusal"
    return None


def parse_answer(kind: str, text: str, lc: LlavaConfig) -> tuple[list[tuple[str, str]] | str | None, str | None]:
    """conversation/reasoning -> [(question, answer), ...]; detail -> the description. Or (None, reason)."""
    if not text.strip():
        return None, "empty_answer"
    if kind == "detail":
        desc = re.sub(r"^\s*(\*\*)?(detailed )?description(\*\*)?\s*:\s*(\*\*)?", "", text.strip(), flags=re.IGNORECASE).strip()
        if _LABEL.match(desc.splitlines()[0]):
            return None, "not_a_description"  # a question/answer list where a paragraph was asked for
        problem = _text_problem([desc])
        if problem is None and len(desc.split()) < lc.min_description_words:
            problem = "description_too_short"
        return (None, problem) if problem else (desc, None)
    pairs, problem = parse_qa(text)
    if problem:
        return None, problem
    problem = _text_problem([t for pair in pairs for t in pair])
    if problem:
        return None, problem
    if kind == "conversation" and len(pairs) < lc.min_turns:
        return None, "too_few_turns"
    if kind == "reasoning":
        if len(pairs) != 1:
            return None, "not_one_question"
        if len(pairs[0][1].split()) < lc.min_reasoning_words:
            return None, "answer_too_short"
    return pairs, None


def build_conversation(kind: str, parsed, rec: ImageRecord, sample: int, *, row_id: str, meta: dict, seed: int) -> Conversation:
    if kind == "detail":
        instr = random.Random(f"{seed}:{rec.key}:{sample}").choice(prompts.LLAVA_DETAIL_INSTRUCTIONS)
        pairs = [(instr, parsed)]
    else:
        pairs = parsed
    messages = []
    for i, (q, a) in enumerate(pairs):
        messages.append({"role": "user", "content": f"{IMAGE_PLACEHOLDER}\n{q}" if i == 0 else q})
        messages.append({"role": "assistant", "content": a})
    return Conversation.from_messages(messages, id=row_id, source=meta["record"], meta=meta, images=(rec.ref,))


def _answer_fingerprint(messages: list[dict]) -> str:
    text = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    return hashlib.sha1(re.sub(r"\s+", " ", text.strip().lower()).encode("utf-8")).hexdigest()[:16]


# ---- the pipeline -------------------------------------------------------------------------------


def row_id(rec: ImageRecord, kind: str, sample: int) -> str:
    return f"llava-{rec.key}-{kind}-{sample}"


def run_llava(cfg: SynthConfig, teacher: ChatBackend) -> SynthReport:
    lc = cfg.llava
    records = read_records(lc.input, lc.image_root, lc.max_images)  # bad input fails before any teacher call
    out = JsonlOutput(cfg.output)
    state = ProgressState(state_path(cfg.output))
    report = SynthReport("llava", cfg.output, rows_resumed=len(out.rows), truncated_bytes=out.truncated_bytes)
    rejected_ids = set(state.data.setdefault("rejected_ids", []))
    # the same answer twice for one (image, type) -- e.g. temperature 0 -- is one row, not two
    fingerprints = {(r["meta"].get("record_id"), r["meta"].get("type"), _answer_fingerprint(r["messages"]))
                    for r in out.rows if r.get("meta", {}).get("pipeline") == "llava"}
    versions = {k: prompt_version(k) for k in lc.types}
    todo = [(rec, kind, k) for rec in records for kind in lc.types for k in range(lc.per_image)
            if row_id(rec, kind, k) not in out.ids and row_id(rec, kind, k) not in rejected_ids]
    done_before = len(records) * len(lc.types) * lc.per_image - len(todo)
    try:
        for start in range(0, len(todo), lc.batch_size):
            t_step = time.monotonic()
            batch = todo[start : start + lc.batch_size]
            results: dict[int, object] = {}
            for k in sorted({k for _, _, k in batch}):  # one seed per sample index: samples of one image differ
                idx = [i for i, (_, _, kk) in enumerate(batch) if kk == k]
                asks = [teacher_messages(batch[i][1], batch[i][0], lc) for i in idx]
                got = teacher.complete(asks, max_tokens=lc.max_tokens, temperature=lc.temperature, seed=cfg.seed + k)
                results.update(zip(idx, got))
            for i, (rec, kind, k) in enumerate(batch):
                res, rid = results[i], row_id(rec, kind, k)
                if not res.ok:
                    state.count("rejected", f"{kind}:call_failed")  # retried by the next run
                    continue
                parsed, problem = parse_answer(kind, res.text, lc)
                conv = None
                if problem is None:
                    meta = {"pipeline": "llava", "type": kind, "sample": k, "record": rec.where, "record_id": rec.key,
                            "teacher": teacher.name, "prompt_hash": versions[kind], "few_shot": lc.few_shot,
                            "seed": cfg.seed, "temperature": lc.temperature}
                    conv = build_conversation(kind, parsed, rec, k, row_id=rid, meta=meta, seed=cfg.seed)
                    fp = (rec.key, kind, _answer_fingerprint(conv.to_dicts()))
                    if fp in fingerprints:
                        problem = "duplicate_sample"
                if problem:
                    state.count("rejected", f"{kind}:{problem}")
                    rejected_ids.add(rid)
                    state.data["rejected_ids"].append(rid)
                    continue
                out.append(conv)
                fingerprints.add(fp)
                report.rows_new += 1
            state.save_progress(teacher)
            print(f"llava: {done_before + start + len(batch)}/{done_before + len(todo)} (image, type, sample) done, "
                  f"{len(out.rows)} rows, {time.monotonic() - t_step:.0f} s", file=sys.stderr, flush=True)
    finally:
        out.close()
        state.save_progress(teacher)
        report.fill(len(out.rows), state, teacher)
        by_type = {t: sum(1 for r in out.rows if r.get("meta", {}).get("type") == t) for t in lc.types}
        report.note = "rows by type: " + ", ".join(f"{t} {n}" for t, n in by_type.items())
        missing = sum(1 for r in records if not r.ref.startswith(URL_PREFIXES) and not os.path.exists(r.ref))
        if missing:
            report.note += (f"; {missing} of {len(records)} local images not found (rows are made from captions alone; "
                            "training needs the images at these paths)")
    return report
