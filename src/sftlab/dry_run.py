"""`sftlab train CONFIG --dry-run`: everything `train` checks before its first step, on every row,
without loading model weights or writing anything.

What it does, in train's order, with train's own functions where they exist:
  output_dir   the same refusals as train.check_output_dir (a file; a used folder without --resume or
               --overwrite; other people's files with --overwrite), computed without deleting or
               creating anything; with --overwrite it lists what would be deleted, with --resume it
               reads the newest intact checkpoint's meta.json (checkpoint.checkpoint_problem: sizes
               and sha256, no weights loaded) and asks train.check_resume_meta whether it would resume
  tokenizer    load_tokenizer (a GGUF's tokenizer is read from the file itself: train's cached
               safetensors copy is not made), the run's template and train_on
  data         prepare() itself, with pre-flight on EVERY row (train checks the first 200) and the
               token cache read but never written: load every source, render + mask, length policy,
               packing. It prints the summary train prints.
  bad rows     when prepare refuses the data, each source is loaded and rendered again on its own to
               list every bad row with its file:line (or source id) and reason (the loader stops at
               20 problems per file)
  steps        the optimizer steps the run would take (train's formula, for one process)

Exit status: 0 when `sftlab train` with the same config and flags would start, 2 otherwise (a bad row
anywhere counts, even after the first 200 rows train checks itself).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from sftlab.config import DataConfig, RunConfig
from sftlab.conversation import Conversation
from sftlab.errors import DataError, SftlabError, TemplateError
from sftlab.multimodal import setup as mm_setup
from sftlab.multimodal.vision import VisionInputs
from sftlab.render import Rendered, Renderer, preflight


@dataclass
class BadRow:
    where: str  # file:line, or the source id of a row without one
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class DryRun:
    """What the dry run found. `ok`: train would start."""

    lines: list[str] = field(default_factory=list)  # the report, as printed
    problems: list[str] = field(default_factory=list)  # each one a reason train would refuse
    bad_rows: list[BadRow] = field(default_factory=list)
    steps: int | None = None  # optimizer steps the run would take (from its start step)
    summary: str = ""  # prepare()'s data summary, exactly as train prints it

    @property
    def ok(self) -> bool:
        return not self.problems and not self.bad_rows

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 2


def dry_run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, force_resume: bool = False,
            config_name: str = "the config") -> DryRun:
    from sftlab.prepare import prepare
    from sftlab.templates import apply_template
    from sftlab.train import length_loss_warning

    result = DryRun()
    say = result.lines.append
    resume = resume or force_resume
    say(f"dry run of {config_name}: every check train makes before its first step, on every data row; "
        "no model weights are loaded and nothing is written")
    out = Path(cfg.train.output_dir)
    refusal, plan = output_dir_verdict(out, resume=resume, overwrite=overwrite)
    if refusal:
        result.problems.append(refusal)
    try:  # train.report_to: a tracker whose package is missing stops train before it starts
        from sftlab.tracking import check_installed

        check_installed(cfg.train.report_to)
    except SftlabError as e:
        result.problems.append(str(e))

    # ---- tokenizer, template --------------------------------------------------------------------
    vision = None
    try:
        tokenizer, described = load_tokenizer_only(cfg)
        say(f"model: {described}: tokenizer loaded ({type(tokenizer).__name__}, {len(tokenizer)} tokens), weights not loaded")
        try:
            check_weights_present(cfg.model.name)
        except SftlabError as e:  # train would stop at loading the model: said, and the data is still checked
            result.problems.append(str(e))
        added = apply_template(tokenizer, cfg.model.template, add_missing_tokens=cfg.model.add_special_tokens)
        if mm_setup.is_multimodal(cfg):  # images expand to the model's image tokens, as train does
            processor, tokenizer, more = mm_setup.setup_processor(cfg, tokenizer)
            added += more
            vision = VisionInputs(processor)
        renderer = Renderer(tokenizer, train_on=cfg.data.train_on)
        say(f"template: {cfg.model.template}" + (f" (adds {added})" if added else "")
            + f"; stop token {renderer.stop_text!r}; train_on: {cfg.data.train_on}")
    except SftlabError as e:
        result.problems.append(str(e))
        renderer = None

    # ---- data: prepare() itself, every row pre-flighted, the token cache read only ----------------
    data_cfg = read_only_sources(cfg.data)
    prepared = None
    if renderer is not None:
        try:
            prepared = prepare(renderer, data_cfg, cfg.train, pad_id=tokenizer.pad_token_id or 0, preflight_rows=None, store_cache=False,
                               vision=vision)
        except (DataError, TemplateError) as e:
            rows, notes = find_bad_rows(renderer, data_cfg)
            result.bad_rows += rows
            if not rows:  # not a row's fault (no rows at all, an unknown source, ...): train's message
                result.problems.append(str(e))
            say("data: not prepared: " + (f"{len(rows)} bad row(s), listed below" if rows else "see the problem below"))
            for note in notes:
                say(f"  note: {note}")
        except SftlabError as e:
            result.problems.append(str(e))
    if prepared is not None:
        result.summary = prepared.summary()
        say("data:")
        result.lines += ["  " + line for line in result.summary.splitlines()]
        say(f"pre-flight: all {len(prepared.train.examples)} training examples pass (every row checked)")
        if warning := length_loss_warning(prepared.length_report):
            say(f"warning: {warning}")
        total, how = optimizer_steps(len(prepared.train), cfg)
        start = 0
        if resume and refusal is None:
            start, note, problem = resume_point(out, cfg, prepared.fingerprint, force_resume, total)
            plan = note
            if problem:
                result.problems.append(problem)
        result.steps = max(0, total - start)
        say(f"optimizer steps: {total} ({how})" + (f"; {result.steps} left after the checkpoint at step {start}" if start else ""))

    say(f"output_dir: {out.resolve()}: " + (f"REFUSED: {refusal}" if refusal else plan))
    if result.bad_rows:
        say(f"bad rows ({len(result.bad_rows)}):")
        result.lines += [f"  - {row}" for row in result.bad_rows]
    for problem in result.problems:
        if problem != refusal:
            say(f"problem: {problem}")
    counts = ([f"{len(result.bad_rows)} bad row(s)"] if result.bad_rows else []) + (
        [f"{len(result.problems)} other problem(s)" if result.bad_rows else f"{len(result.problems)} problem(s)"] if result.problems else [])
    say("result: ok: `sftlab train` would start with this config" if result.ok
        else f"result: `sftlab train` would refuse this run ({', '.join(counts)}); nothing was written")
    return result


# ---- output_dir --------------------------------------------------------------------------------------
def output_dir_verdict(out: Path, *, resume: bool, overwrite: bool) -> tuple[str | None, str]:
    """(train's refusal message or None, what train would do there). The refusals of
    train.check_output_dir, computed without deleting or creating anything (tests compare the two)."""
    from sftlab.train import sftlab_outputs

    if out.exists() and not out.is_dir():
        return (f"train.output_dir {out.resolve()} is a file, not a folder: sftlab writes checkpoints, metrics.jsonl and "
                "final/ into a folder there. Fix: set train.output_dir to the path of a new or empty folder, or move that file away."), ""
    plan = "does not exist; train creates it" if not out.exists() else "empty; train writes there"
    if out.is_dir() and any(out.iterdir()):
        plan = "--resume continues the run there"
        if not resume:
            ours, foreign = sftlab_outputs(out)
            if foreign and (overwrite or not ours):
                listed = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
                return (f"output folder {out.resolve()} holds {len(foreign)} file(s) or folder(s) that sftlab did not write: {listed}. "
                        + ("--overwrite deletes only sftlab's own outputs (checkpoint-*, final/, metrics.jsonl, run.json) and never your files, so nothing was deleted. "
                           if overwrite else "")
                        + "Fix: move those files out of that folder, or choose another train.output_dir (a new or empty folder)."), ""
            if not overwrite:
                return f"output folder {out.resolve()} is not empty: pass --resume to continue that run or --overwrite to replace it", ""
            plan = "--overwrite would delete sftlab's outputs there: " + ", ".join(p.name + ("/" if p.is_dir() else "") for p in ours)
    problem = _unwritable(out)
    return (f"output folder {out.resolve()} is not writable: {problem}", "") if problem else (None, plan)


def _unwritable(out: Path) -> str | None:
    """Why train could not create and write `out` (None: it could), judged from its nearest existing
    folder, without creating anything."""
    here = out.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        return f"{here} is a file, so no folder can be made under it"
    try:
        readonly = bool(os.statvfs(here).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        readonly = False
    if readonly:
        return f"{here} is on a read-only file system"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"no permission to write in {here}"
    return None


def resume_point(out: Path, cfg: RunConfig, data_fingerprint: str, force: bool, total: int) -> tuple[int, str, str | None]:
    """(start step, what --resume would do, refusal or None), from the newest intact checkpoint's
    meta.json; its files are checked against the sizes and sha256 in its marker, its weights are not
    loaded. The refusal is train.check_resume_meta's own."""
    import json

    from sftlab.checkpoint import Resumed, checkpoint_problem, list_checkpoints
    from sftlab.train import check_resume_meta

    ckpts = list_checkpoints(out)
    if not ckpts:
        return 0, "--resume: no checkpoint there; the run starts fresh from step 0", None
    damaged = []
    for path in reversed(ckpts):
        problem = checkpoint_problem(path)
        try:
            meta = None if problem else json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as e:
            problem = f"meta.json does not load ({e})"
        if problem or not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
            damaged.append(f"{path.name}: {problem or 'meta.json has no step number'}")
            continue
        state = Resumed(meta["step"], path, meta)
        now = {"config_fingerprint": cfg.fingerprint(), "data_fingerprint": data_fingerprint, "config": cfg.model_dump(mode="json")}
        warnings: list[str] = []
        try:
            check_resume_meta(state, now, force, warnings.append)
        except SftlabError as e:
            return state.step, "", str(e)
        skipped = f" (skipping damaged {'; '.join(damaged)})" if damaged else ""
        if state.step >= total and (out / "final").is_dir():
            return state.step, f"--resume: already finished at step {state.step}; train would do nothing{skipped}", None
        return state.step, f"--resume continues from {path.name} at step {state.step}{skipped}" + "".join(f"; {w}" for w in warnings), None
    return 0, "", ("cannot resume: no intact checkpoint in " + str(out.resolve()) + ": " + "; ".join(damaged)
                   + ". Fix: train again from step 0 with --overwrite, or choose a new train.output_dir")


# ---- tokenizer, weights -------------------------------------------------------------------------------
def load_tokenizer_only(cfg: RunConfig):
    """(tokenizer, what the model name points at). The tokenizer train uses: load_tokenizer, except
    that a GGUF's tokenizer is read from the GGUF itself (metadata only), because load_tokenizer
    first converts the whole file to a cached safetensors copy (loading and writing the weights)."""
    from sftlab.model import load_tokenizer, resolve

    src = resolve(cfg.model.name)
    if src.kind != "gguf":
        return load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code), src.described
    from transformers import AutoTokenizer

    gguf = Path(src.path)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError) as e:
        raise SftlabError(f"cannot read the tokenizer of {gguf}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if tok.pad_token is None:  # as load_tokenizer does
        tok.pad_token = tok.eos_token
    return tok, src.described


def check_weights_present(name: str) -> None:
    """A local model folder has config.json and safetensors weights (model.py's check, no weights read)."""
    from sftlab.model import check_model_folder, resolve

    src = resolve(name)
    if src.kind == "folder" and not (Path(src.path) / "adapter_config.json").exists():
        check_model_folder(src.path, weights=True)


# ---- data -----------------------------------------------------------------------------------------------
def read_only_sources(data: DataConfig) -> DataConfig:
    """The data config with every source's `rejects` file unset (a dry run writes nothing)."""
    def plain(src):
        return src.model_copy(update={"rejects": None}) if getattr(src, "rejects", None) else src

    return data.model_copy(update={"train": [plain(s) for s in data.train], "eval": [plain(s) for s in data.eval]})


def find_bad_rows(renderer: Renderer, data: DataConfig) -> tuple[list[BadRow], list[str]]:
    """Every bad row of every source, each source loaded and rendered on its own: the loader's problems
    (up to 20 per file in data.on_error: raise), rows the template cannot render, and, for training
    sources, the pre-flight checks of render.preflight run on each row."""
    from sftlab.prepare import load_source

    rows: list[BadRow] = []
    notes: list[str] = []
    for role, sources in (("train", data.train), ("eval", data.eval)):
        for src in sources:
            try:
                convs, _ = load_source(src, data.on_error)
            except DataError as e:
                rows += [BadRow(p.where, p.message + (f" [{p.field}]" if p.field else "") + (f" (fix: {p.fix})" if p.fix else ""))
                         for p in e.problems]
                if "stopped looking" in str(e).splitlines()[0]:
                    notes.append(f"{src.path}: the loader stops after 20 problems per file; more may follow them")
                try:  # the rows it could load are still rendered and checked, so one run lists both kinds
                    convs, _ = load_source(src, "skip")
                except SftlabError:
                    continue
            except SftlabError as e:
                rows.append(BadRow(src.path, str(e)))
                continue
            for conv, r in zip(convs, renderer.render_batch(convs)):
                rows += [BadRow(conv.source or conv.id, reason) for reason in row_problems(renderer, conv, r, checks=role == "train")]
    return rows, notes


def row_problems(renderer: Renderer, conv: Conversation, rendered: Rendered | TemplateError, checks: bool = True) -> list[str]:
    """Why one rendered row would stop training: its TemplateError, or (with `checks`) each failed
    pre-flight check (render.preflight on this one row)."""
    if isinstance(rendered, TemplateError):
        msg, where = str(rendered), conv.source or conv.id
        return [msg[len(where) + 2 :] if msg.startswith(f"{where}: ") else msg]
    if not checks:
        return []
    report = preflight(renderer, [conv], 1, rendered=[rendered])
    reasons = []
    if report.no_trained_tokens:
        reasons.append("no trained tokens (every example needs an assistant answer to train on; check the roles and data.train_on)")
    if report.untrained_stop:
        reasons.append(f"an assistant turn's stop token {renderer.stop_text!r} is not trained (the template must close turns with its stop token)")
    if report.double_bos:
        reasons.append("double BOS at the start (the template already writes BOS; do not add another)")
    return reasons


def optimizer_steps(micro_batches: int, cfg: RunConfig, processes: int = 1) -> tuple[int, str]:
    """(optimizer steps, how they follow from the config): train.py's formula for `processes` processes."""
    per_step = cfg.train.grad_accum * processes
    per_epoch = math.ceil(micro_batches / per_step)
    if cfg.train.max_steps:
        return cfg.train.max_steps, f"train.max_steps; an epoch is {per_epoch} steps"
    total = max(1, math.ceil(per_epoch * cfg.train.epochs))
    return total, (f"{cfg.train.epochs:g} epoch(s) x {per_epoch} steps: {micro_batches} micro-batches / "
                   f"(train.grad_accum {cfg.train.grad_accum} x {processes} process{'es' if processes > 1 else ''})")
