"""The training recipe. Read it top to bottom: train() sets up (data, model, optimizer and schedule,
resume), runs the loop and the final evaluation inside `speed.enabled(...)`, then saves (finish).

Loss normalisation: one optimizer step = `grad_accum` micro-batches on each of `world` processes.
Its loss is   sum of token cross-entropies over all of them / number of trained tokens in all of
them   — every trained token weighs the same, however the tokens fall into micro-batches or
processes. Each micro-batch backpropagates  loss_sum * world / n_step  because DDP averages
gradients over processes. tests/test_train.py checks batch 8 x 1 step == batch 1 x 8 accumulated.
With train.kl_to_base.beta > 0 each token's term is  CE + beta * KL(tuned || base)  (sftlab/kl.py),
normalised the same way; eval losses stay plain CE.

Memory/speed options (train.*; each measured by `benchmarks/bench_train.py --techniques`):
gradient_checkpointing, compile (falls back to eager with a warning if compiling fails), autocast
(bf16 forward). Fast paths with the same math (fused layers, per-example attention, OpenBLAS,
chunked lm_head + CE) sit behind one boundary, `speed.enabled(...)` around the loop (train.speed.*,
sftlab/speed/); with them off this loop is the textbook one, the reference of the equivalence tests.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from sftlab import neftune, speed, tracking
from sftlab.checkpoint import (CHECKPOINT_FILES, MARKER, TEMP_PREFIX, Resumed, dumps_json, remove_stale_temp_folders, resume_latest,
                               save_checkpoint, write_json_atomic)
from sftlab.config import RunConfig
from sftlab.errors import SftlabError
from sftlab.kl import KLToBase, reference_copy
from sftlab.loss import summed_loss
from sftlab.speed import shared_prefix
from sftlab.model import add_lora, count_parameters, load_model, load_tokenizer, save_model
from sftlab.model_card import model_card
from sftlab.pack import Batch, PackedDataset
from sftlab.prepare import Prepared, prepare
from sftlab.render import Renderer
from sftlab.multimodal import setup as mm_setup
from sftlab.multimodal.vision import VisionInputs
from sftlab.templates import apply_template
from sftlab.train_eval import GenerationEval, TrainEval, load_best


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path
    steps: int
    final_loss: float
    eval_loss: float | None
    trained_tokens: int
    seconds: float
    stopped_early: str = ""
    nonfinite_skipped_steps: int = 0  # optimizer steps skipped for a non-finite loss, over the whole run (resumes included)
    warnings: list[str] = field(default_factory=list)  # e.g. compile fell back to eager
    eval_accuracy: float | None = None  # train.eval_generate: of the model in final/
    best: dict | None = None  # train.best_metric: the step final/ holds and why (train_eval.TrainEval.summary)
    early_stopped: str = ""  # train.early_stopping_patience ended the run (final/ saved, unlike stopped_early)


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, force_resume: bool = False, model=None, tokenizer=None) -> TrainResult:
    """Train as configured. `model`/`tokenizer` may be passed in (tests, notebooks).

    `force_resume` resumes even when the config or data changed since the checkpoint (warned, not refused)."""
    out = Path(cfg.train.output_dir)
    accelerator = Accelerator(cpu=_cpu_processes_launched(), **tracking.accelerator_kwargs(cfg.train.report_to, out))
    check_output_dir(out, resume=resume, overwrite=overwrite, is_main=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    set_seed(cfg.train.seed)
    run = setup(cfg, accelerator, out, model, tokenizer)
    start = setup_resume(run, resume=resume, force=force_resume)
    if start.finished:
        return finished_result(out, start.step)
    with (tracking.trackers(accelerator, cfg.train.report_to, out, run.meta["config"]),
          speed.enabled(run.eager_model, cfg.train.speed, accelerator.device, recorded=start.kernels,
                        autocast=cfg.train.autocast, log=run.log) as fast):
        run.meta["speed"] = fast.kernels  # saved with every checkpoint: a resumed run computes with the same kernels
        fast.loss = shared_prefix.wrap(fast.loss, run.eager_model, cfg, run.data.train.examples, run.log)
        outcome = loop(run, start, fast)
        if not outcome.stopped_early:
            final_evaluation(run, outcome, fast)
    return finish(run, start, outcome)


# ---- setup: data, model, optimizer and schedule, resume ------------------------------------------------
@dataclass
class Run:
    """Everything the loop needs, made once by setup()."""

    cfg: RunConfig
    accelerator: Accelerator
    out: Path
    tokenizer: object
    processor: object | None  # a multimodal run's processor (saved with the model), else None
    data: Prepared
    base_name: str | None  # what final/ names as its base (a model passed in: its own path)
    model: torch.nn.Module  # what the loop calls (compiled under train.compile)
    eager_model: torch.nn.Module  # uncompiled (maybe DDP-wrapped): evaluation and the compile fallback use it
    params: list[torch.nn.Parameter]  # the trained ones
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    micro_per_step: int  # micro-batches per optimizer step, all processes
    steps_per_epoch: int
    total_steps: int
    meta: dict  # saved in every checkpoint: fingerprints, the config, the speed kernels (+ "evaluation": the best so far)
    length_warning: str
    evals: TrainEval  # evaluation during training, best checkpoint, early stopping (train_eval.py)
    kl: KLToBase | None = None  # train.kl_to_base.beta > 0: the training loss (CE + beta * KL to the base)

    @property
    def log(self):
        return self.accelerator.print

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"


def setup(cfg: RunConfig, accelerator: Accelerator, out: Path, model, tokenizer) -> Run:
    """Data, model (disk space checked for its checkpoints), optimizer and schedule; the model
    prepared by accelerate (DDP, FSDP, ...) and compiled under train.compile."""
    log = accelerator.print
    tokenizer, processor, added_tokens, data = setup_data(cfg, tokenizer)
    log(data.summary())
    if length_warning := length_loss_warning(data.length_report):
        log(f"warning: {length_warning}")
    base_name = cfg.model.name if model is None else None
    model = setup_model(cfg, model, tokenizer, added_tokens, processor)
    kl = None
    if cfg.train.kl_to_base.beta > 0:  # before any resume loads weights: the reference is the starting model
        reference = None if cfg.lora.enabled else reference_copy(model).to(accelerator.device)
        kl = KLToBase(cfg.train.kl_to_base.beta, reference, cfg.train.speed.loss_chunk_tokens)
        log(f"kl_to_base: beta {kl.beta}; base distribution from "
            + ("the same model with its LoRA adapters switched off" if reference is None else "a frozen copy of the starting weights"))
    trainable, total = count_parameters(model)
    if accelerator.is_main_process:
        check_free_space(out, model)
    kind = f"{'DoRA' if cfg.lora.use_dora else 'LoRA'} r={cfg.lora.r}" if cfg.lora.enabled else "full fine-tuning"
    kind += ", base in 4-bit NF4 (QLoRA)" if cfg.model.load_in_4bit else ""
    kind += f", NEFTune alpha {cfg.train.neftune_alpha:g}" if cfg.train.neftune_alpha else ""
    log(f"model: {cfg.model.name}: {total / 1e6:.1f}M parameters, {trainable / 1e6:.2f}M trainable ({kind})")
    micro_per_step = cfg.train.grad_accum * accelerator.num_processes
    steps_per_epoch = math.ceil(len(data.train) / micro_per_step)
    total_steps = cfg.train.max_steps or max(1, math.ceil(steps_per_epoch * cfg.train.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = setup_optimizer(cfg.train, trainable_param_groups(model, cfg), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    compiled = torch.compile(model) if cfg.train.compile else model
    # the config itself travels too, so a refused resume can name the keys that changed
    meta = {"config_fingerprint": cfg.fingerprint(), "data_fingerprint": data.fingerprint, "config": cfg.model_dump(mode="json")}
    evals = TrainEval(cfg.train, GenerationEval.load(cfg.train.eval_generate, tokenizer) if cfg.train.eval_generate else None)
    return Run(cfg, accelerator, out, tokenizer, processor, data, base_name, compiled, model, params, optimizer, scheduler,
               micro_per_step, steps_per_epoch, total_steps, meta, length_warning, evals, kl)


def setup_data(cfg: RunConfig, tokenizer) -> tuple[object, object | None, list[str], Prepared]:
    """(tokenizer with the chat template applied, a multimodal run's processor or None, tokens added,
    the data rendered, length-policed and packed)."""
    multimodal = mm_setup.is_multimodal(cfg)
    processor = None
    if multimodal and tokenizer is not None and hasattr(tokenizer, "image_processor"):
        processor, tokenizer = tokenizer, tokenizer.tokenizer  # a processor passed in (tests, notebooks)
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model.name, trust_remote_code=cfg.model.trust_remote_code)
    added_tokens = apply_template(tokenizer, cfg.model.template, add_missing_tokens=cfg.model.add_special_tokens)
    if multimodal and processor is None:
        processor, tokenizer, more = mm_setup.setup_processor(cfg, tokenizer)
        added_tokens += more
    renderer = Renderer(tokenizer, train_on=cfg.data.train_on)
    vision = VisionInputs(processor) if processor is not None else None
    return tokenizer, processor, added_tokens, prepare(renderer, cfg.data, cfg.train, pad_id=tokenizer.pad_token_id or 0, vision=vision)


def setup_model(cfg: RunConfig, model, tokenizer, added_tokens, processor=None) -> torch.nn.Module:
    """The model as configured (or as passed in), embeddings resized for added tokens, LoRA (or a
    multimodal run's stage: what trains), checkpointing."""
    if processor is not None:
        model = model if model is not None else mm_setup.setup_model(cfg, processor)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model = mm_setup.apply_trainable(model, cfg)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if cfg.train.neftune_alpha:
            neftune.attach(model, cfg.train.neftune_alpha)
        return model
    if model is None:
        model = load_model(cfg.model.name, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation,
                           trust_remote_code=cfg.model.trust_remote_code, load_in_4bit=cfg.model.load_in_4bit)
    if added_tokens:
        model.resize_token_embeddings(len(tokenizer))
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules, use_dora=cfg.lora.use_dora,
                         layers=cfg.lora.layers)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.train.neftune_alpha:  # noise on the input embeddings in training forwards only (neftune.py)
        neftune.attach(model, cfg.train.neftune_alpha)
    return model


def trainable_param_groups(model, cfg) -> list:
    """The trainable tensors, or two AdamW groups when multimodal.projector_lr gives the projector its own
    peak lr (the scheduler scales each group's lr by the same warmup/decay factor)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    projector_lr = cfg.multimodal.projector_lr if cfg.multimodal is not None else None
    if projector_lr is None:
        return [p for _, p in named]
    from sftlab.multimodal.setup import part_of

    projector = [p for n, p in named if part_of(n) == "projector"]
    rest = [p for n, p in named if part_of(n) != "projector"]
    if not projector:
        raise ValueError("multimodal.projector_lr is set but no projector weight trains; fix: add projector to "
                         "multimodal.trainable, or set multimodal.projector_lr: null")
    return [g for g in ({"params": rest}, {"params": projector, "lr": projector_lr}) if g["params"]]


def setup_optimizer(tc, params: list, total_steps: int):
    """AdamW and the warmup + decay schedule over `total_steps`; `params` = tensors or AdamW param groups."""
    # torch's fused AdamW (one kernel over all tensors) where it has one: for SmolLM2's 420 LoRA tensors
    # a step takes ~10 ms instead of ~55 ms with the default foreach implementation on this CPU
    tensors = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    fused = bool(tensors) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in tensors)
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay, fused=fused)
    scheduler = get_scheduler(tc.schedule if tc.schedule != "constant" else "constant_with_warmup", optimizer,
                              num_warmup_steps=round(tc.warmup_ratio * total_steps), num_training_steps=total_steps)
    return optimizer, scheduler


@dataclass
class Start:
    """Where this session starts: step 0, or a checkpoint's step and what the run had done by then."""

    step: int = 0
    kernels: dict | None = None  # the speed kernels the checkpoint's run chose at its start
    nonfinite_skipped: int = 0
    finished: bool = False  # resumed a finished run: nothing to do


def setup_resume(run: Run, *, resume: bool, force: bool) -> Start:
    """Load the newest intact checkpoint (damaged ones are named and skipped) when resuming, refuse
    one saved with another config or data (unless `force`), and cut metrics.jsonl back to its step."""
    out, log, start = run.out, run.log, Start()
    if resume and run.is_main and (stale := remove_stale_temp_folders(out)):
        log(f"removed {len(stale)} half-written checkpoint folder(s) left by an interrupted save: {', '.join(stale)}")
    state = resume_latest(out, run.accelerator.unwrap_model(run.model), run.optimizer, run.scheduler, log) if resume else None
    if state is not None:
        check_resume_meta(state, run.meta, force, log)
        start.step, start.kernels = state.step, state.meta.get("speed")
        run.evals.restore(state.meta.get("evaluation"))
        if (start.step >= run.total_steps or run.evals.stop_reason) and (out / "final").is_dir():  # a finished run: touch nothing
            log(f"{out}: already finished at step {start.step}" + (f" ({run.evals.stop_reason})" if run.evals.stop_reason else "")
                + "; nothing to do (use --overwrite to train again)")
            start.finished = True
            return start
        log(f"resumed from {state.path} at step {start.step}")
    elif resume:
        log(f"--resume: no checkpoint in {out.resolve()}; starting a fresh run from step 0")
    if run.is_main:
        truncate_metrics(run.metrics_path, start.step)
    if run.is_main and start.step:  # the count so far travels in the metrics log (its last line is the checkpoint's step)
        start.nonfinite_skipped = skipped_so_far(run.metrics_path)
    return start


# ---- the loop ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What the loop did in this session."""

    steps: int  # the run's step count reached (the checkpoint's when no step ran)
    nonfinite_skipped: int  # over the whole run
    last_loss: float = float("nan")
    eval_loss: float | None = None
    trained_tokens: int = 0  # this session
    started: float = field(default_factory=time.time)
    stopped_early: str = ""  # stopped without finishing (a signal, non-finite losses): no final/
    warnings: list[str] = field(default_factory=list)
    eval_accuracy: float | None = None
    early_stopped: str = ""  # train.early_stopping_patience: a planned stop, final/ is saved


def loop(run: Run, start: Start, fast: speed.Speed) -> Outcome:
    """Optimizer steps from start.step to run.total_steps: a non-finite step is skipped (the run
    stops after train.max_nonfinite_steps in a row), eval every eval_every (a new best of
    train.best_metric is checkpointed and kept; early stopping ends the loop), a checkpoint every
    save_every, and SIGINT/SIGTERM finish the step, save and stop."""
    tc, acc, log = run.cfg.train, run.accelerator, run.log
    o = Outcome(start.step, start.nonfinite_skipped)
    model, nonfinite_in_a_row = run.model, 0
    # train.kl_to_base.beta > 0: CE + beta * KL to the base (sftlab/kl.py); else the plain/fast CE
    loss_fn = fast.loss if run.kl is None else run.kl
    model.train()
    bar = tqdm(total=run.total_steps, initial=start.step, desc="train", unit="step", disable=not run.is_main, dynamic_ncols=True)
    with stop_signals() as stop_requested, contextlib.closing(bar):
        for step in range(start.step, run.total_steps):
            if run.evals.stop_reason:  # resumed after an early stop that was interrupted before final/ was saved
                o.early_stopped = run.evals.stop_reason
                break
            o.steps = step + 1
            batches = step_batches(run.data.train, step, run.micro_per_step, acc.process_index, acc.num_processes)
            if run.kl is not None:
                run.kl.reset()
            try:
                step_loss, n_step, _ = accumulate_gradients(model, batches, acc, loss_fn=loss_fn, autocast=fast.autocast)
            except Exception as e:  # noqa: BLE001 - only a compiled model is retried; eager errors propagate
                if model is run.eager_model:
                    raise
                # compiling happens lazily inside the forward (first step, or a recompile for a new
                # shape). Redo this step uncompiled; a genuine error then raises from the eager model.
                o.warnings.append(f"train.compile: torch.compile failed at step {step + 1} ({describe_error(e)}); "
                                  "continuing without compile. Set train.compile: false to skip the attempt.")
                log(f"warning: {o.warnings[-1]}")
                run.optimizer.zero_grad(set_to_none=True)
                model = run.eager_model
                if run.kl is not None:
                    run.kl.reset()
                step_loss, n_step, _ = accumulate_gradients(model, batches, acc, loss_fn=loss_fn, autocast=fast.autocast)
            if not math.isfinite(step_loss):
                run.optimizer.zero_grad(set_to_none=True)
                nonfinite_in_a_row += 1
                o.nonfinite_skipped += 1
                log(f"step {step + 1}: non-finite loss ({step_loss}); step skipped ({nonfinite_in_a_row} in a row)")
                if nonfinite_in_a_row >= tc.max_nonfinite_steps:
                    o.stopped_early = (f"{nonfinite_in_a_row} non-finite losses in a row (train.max_nonfinite_steps={tc.max_nonfinite_steps}); "
                                       "no final model saved: lower train.lr or check the data, then start again")
                    break
                run.scheduler.step()
                continue
            nonfinite_in_a_row = 0
            grad_norm = float(acc.clip_grad_norm_(run.params, tc.max_grad_norm)) if tc.max_grad_norm else None
            lr_used = run.scheduler.get_last_lr()[0]  # the rate this optimizer.step() applies (read before scheduler.step())
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            o.last_loss = step_loss
            o.trained_tokens += n_step
            elapsed = time.time() - o.started
            record = {"step": step + 1, "epoch": round((step + 1) / run.steps_per_epoch, 4), "loss": round(step_loss, 6),
                      "lr": lr_used, "grad_norm": grad_norm, "trained_tokens": n_step,
                      "trained_tokens_per_s": round(o.trained_tokens / elapsed, 1), "elapsed_s": round(elapsed, 3),
                      "nonfinite_skipped": o.nonfinite_skipped}  # steps skipped so far in the run (a skipped step has no line)
            if run.kl is not None:  # loss = ce_loss + beta * kl_to_base (each per trained token of the step)
                record.update(run.kl.step_record(acc, n_step))
            new_best = False
            if run.evals.due(step + 1, run.total_steps):
                evaluated = run_evaluation(run, step + 1, fast)
                record.update(evaluated)
                new_best = run.evals.observe(step + 1, evaluated)
                run.meta["evaluation"] = run.evals.state()
                model.train()
            if run.is_main:
                append_jsonl(run.metrics_path, record)
            tracking.log(acc, record)
            bar.set_postfix(loss=f"{step_loss:.4f}", trained_tok_s=f"{o.trained_tokens / elapsed:.0f}", refresh=False)
            bar.update(1)
            if (tc.save_every and (step + 1) % tc.save_every == 0) or stop_requested or new_best:
                if run.is_main:
                    save_checkpoint(run.out, step + 1, acc.unwrap_model(model), run.optimizer, run.scheduler, run.meta, tc.keep_checkpoints,
                                    protect=run.evals.protected())
                acc.wait_for_everyone()
            if stop_requested:
                o.stopped_early = f"stopped by {stop_requested[0]} after step {step + 1}; resume with --resume"
                break
            if run.evals.stop_reason:
                o.early_stopped = run.evals.stop_reason
                log(o.early_stopped)
                break
    return o


def run_evaluation(run: Run, step: int, fast: speed.Speed) -> dict:
    """eval_loss (with eval data) and eval_accuracy (train.eval_generate) of the model after `step`."""
    eval_loss = (lambda: evaluate_loss(run.eager_model, run.data.eval, run.accelerator, fast.loss)) if run.data.eval is not None else (lambda: None)
    return run.evals.evaluate(step, run.eager_model, run.accelerator, eval_loss)


def final_evaluation(run: Run, o: Outcome, fast: speed.Speed) -> None:
    """The end-of-run eval loss (and accuracy) of the last model; the loop's, when it evaluated the last step."""
    metrics = run.evals.metrics_at(o.steps)
    if metrics is None and (run.data.eval is not None or run.evals.generation is not None):
        metrics = run_evaluation(run, o.steps, fast)
    if metrics:
        o.eval_loss, o.eval_accuracy = metrics.get("eval_loss", o.eval_loss), metrics.get("eval_accuracy")


def finish(run: Run, start: Start, o: Outcome) -> TrainResult:
    """The last checkpoint and final/ (model + card; from the best checkpoint under train.best_metric)
    unless the run stopped without finishing; run.json; the summary line."""
    final_dir, best = run.out / "final", None
    if not o.stopped_early and run.is_main:
        model = run.accelerator.unwrap_model(run.model)
        save_checkpoint(run.out, o.steps, model, run.optimizer, run.scheduler, run.meta, run.cfg.train.keep_checkpoints,
                        protect=run.evals.protected())
        final_from = final_weights_step(run, o, model)
        best = run.evals.summary(o.steps, final_from)
        card = model_card(run.cfg, run.data, base_model=run.base_name, steps=final_from, steps_per_epoch=run.steps_per_epoch,
                          final_loss=o.last_loss, eval_loss=o.eval_loss, lora=hasattr(model, "peft_config"))
        save_model(model, run.processor or run.tokenizer, final_dir, base_model=run.base_name, card=card)
    result = TrainResult(run.out, final_dir, o.steps, o.last_loss, o.eval_loss, o.trained_tokens, time.time() - o.started,
                         o.stopped_early, o.nonfinite_skipped, o.warnings, o.eval_accuracy, best, o.early_stopped)
    if run.is_main:
        if run.length_warning:
            result.warnings.insert(0, run.length_warning)
        write_json_atomic(run.out / "run.json", run_record(run.cfg, result, run.data, start.step, run.metrics_path))
        msg = f"done: {o.steps} steps, loss {o.last_loss:.4f}" + (f", eval loss {o.eval_loss:.4f}" if o.eval_loss is not None else "")
        if o.nonfinite_skipped:
            msg += f", {o.nonfinite_skipped} step(s) skipped for a non-finite loss"
        if best is not None:
            msg += f"; best {best['metric']} {best['value']:g} at step {best['step']}" + (f" ({o.early_stopped})" if o.early_stopped else "")
        run.log(msg + (f" ({o.stopped_early})" if o.stopped_early else f"; model saved to {final_dir}"))
    return result


def final_weights_step(run: Run, o: Outcome, model) -> int:
    """Under train.best_metric, put the best checkpoint's weights into `model` (for final/) and report
    its eval metrics; returns the step final/ holds (the last one when that is the best or without best_metric)."""
    step = run.evals.best.step
    if step is None or step == o.steps:
        return o.steps
    if problem := load_best(run.out, step, model):
        o.warnings.append(f"train.best_metric: the best checkpoint (step {step}) cannot be read ({problem}); final/ holds the last step instead")
        run.log(f"warning: {o.warnings[-1]}")
        return o.steps
    o.eval_loss = run.evals.best.metrics.get("eval_loss", o.eval_loss)
    o.eval_accuracy = run.evals.best.metrics.get("eval_accuracy", o.eval_accuracy)
    return step


# ---- helpers (each small, each used above) ---------------------------------------------------------
def accumulate_gradients(model, batches: list[Batch], accelerator: Accelerator, *, loss_fn=summed_loss,
                         autocast: str = "off") -> tuple[float, int, int]:
    """Backpropagate one optimizer step's micro-batches; returns (loss, trained tokens, real tokens).

    Gradients equal those of  sum(token CE over the whole step, all processes) / trained tokens
    of the whole step: the count is all-reduced BEFORE any backward, each micro-batch scales its
    summed loss by world / n_step, and DDP's gradient average divides the world back out.
    `loss_fn(model, batch)` -> (summed loss, trained tokens): loss.summed_loss, or the one
    speed.enabled() supplies. `autocast="bf16"` runs the forward (not the backward call) under bf16 autocast.
    """
    world = accelerator.num_processes
    n_local = sum(b.n_trained for b in batches)
    n_step = int(accelerator.reduce(torch.tensor(n_local), reduction="sum"))
    loss_sum = torch.zeros(())
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):  # sync grads once per step
            with forward_autocast(autocast, accelerator.device):
                loss, _ = loss_fn(model, batch)
            accelerator.backward(loss * world / max(1, n_step))
        loss_sum += loss.detach().float()
    step_loss = float(accelerator.reduce(loss_sum, reduction="sum")) / max(1, n_step)
    return step_loss, n_step, sum(b.n_tokens for b in batches)


def step_batches(ds: PackedDataset, step: int, micro_per_step: int, rank: int, world: int) -> list[Batch]:
    """This process's micro-batches for `step`. Epoch order is a pure function of (seed, epoch), so
    the step number alone fixes the data position (exact resume). Every process gets the same
    number of micro-batches — an empty one fills a short final step — so DDP collectives match."""
    per_epoch = math.ceil(len(ds) / micro_per_step)
    epoch, k = divmod(step, per_epoch)
    rows = ds.epoch_rows(epoch)
    group = rows[k * micro_per_step : (k + 1) * micro_per_step]
    mine = group[rank::world]
    batches = [ds.collate(r) for r in mine]
    per_process = math.ceil(micro_per_step / world)
    while len(batches) < per_process:
        batches.append(empty_like(ds.collate(rows[0])))
    return batches


def empty_like(batch: Batch) -> Batch:
    """Same shapes, nothing trained: lets a process without data join the step's collectives."""
    return Batch(batch.input_ids, torch.full_like(batch.labels, -100), batch.position_ids, batch.attention_mask, 0, 0)


def forward_autocast(mode: str, device: torch.device):
    """bf16 autocast for `train.autocast: bf16` (matmuls in bf16, reductions and the loss in fp32)."""
    if mode == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward instead of keeping them.

    Non-reentrant torch.utils.checkpoint (what transformers uses by default). For LoRA the input
    embeddings are frozen, so their output does not require grad; with reentrant checkpointing
    no gradient would reach the adapters. transformers' activation_checkpointing_enable already
    hooks the embeddings for input_ids models, and TRL calls enable_input_require_grads for peft
    models itself (transformers issue #42489); we do the same so LoRA keeps its gradients whatever
    the transformers version. tests/test_train_techniques.py checks the gradients (full and LoRA).
    """
    peft = hasattr(model, "get_base_model")
    base = model.get_base_model() if peft else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise SftlabError(f"train.gradient_checkpointing: {type(base).__name__} does not support it; set train.gradient_checkpointing: false")
    enable = getattr(base, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x name; gradient_checkpointing_enable is its deprecated alias
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if peft:
        base.enable_input_require_grads()


def describe_error(e: BaseException) -> str:
    """One line: the error and, for wrapped ones (dynamo's BackendCompilerFailed), what it wraps."""
    def line(x: BaseException) -> str:
        return f"{type(x).__name__}: " + (str(x).strip().splitlines() or [""])[0][:300]

    inner = getattr(e, "inner_exception", None) or e.__cause__
    return line(e) + (f" <- {line(inner)}" if inner is not None and inner is not e else "")


def skipped_so_far(metrics_path: Path) -> int:
    """Non-finite steps skipped before the resume point: the last metrics line's running count."""
    if not metrics_path.exists():
        return 0
    lines = [x for x in metrics_path.read_text().splitlines() if x.strip()]
    return int(json.loads(lines[-1]).get("nonfinite_skipped", 0)) if lines else 0


@torch.no_grad()
def evaluate_loss(model, ds: PackedDataset, accelerator: Accelerator, loss_fn=summed_loss) -> float:
    """Mean cross-entropy per trained token over the eval set (response loss, as in training).
    Runs in the model's dtype without autocast, so eval losses compare across train.autocast settings."""
    model.eval()
    total = torch.zeros(())
    count = torch.zeros(())
    for i in range(accelerator.process_index, len(ds), accelerator.num_processes):
        loss, n = loss_fn(model, ds.batch(i))
        total += loss
        count += n
    total = accelerator.reduce(total, reduction="sum")
    count = accelerator.reduce(count, reduction="sum")
    return float(total / count.clamp(min=1))


def _cpu_processes_launched() -> bool:
    """True when torchrun/accelerate started several processes on a machine without a GPU.
    accelerate only sets up gloo DDP on CPU when asked for cpu=True (or ACCELERATE_USE_CPU=1);
    without it each process trains alone on the same data and they overwrite each other's output."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return world > 1 and not has_gpu


def check_output_dir(out: Path, *, resume: bool, overwrite: bool, is_main: bool) -> None:
    """Refuse a file or a used folder; with `overwrite`, delete sftlab's own outputs there (and
    nothing else: any other file stops the run, named, before anything is deleted)."""
    if not is_main:
        return
    if out.exists() and not out.is_dir():
        raise SftlabError(
            f"train.output_dir {out.resolve()} is a file, not a folder: sftlab writes checkpoints, metrics.jsonl and "
            "final/ into a folder there. Fix: set train.output_dir to the path of a new or empty folder, or move that file away."
        )
    if out.is_dir() and any(out.iterdir()) and not resume:
        ours, foreign = sftlab_outputs(out)
        if foreign and (overwrite or not ours):
            listed = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
            raise SftlabError(
                f"output folder {out.resolve()} holds {len(foreign)} file(s) or folder(s) that sftlab did not write: {listed}. "
                + ("--overwrite deletes only sftlab's own outputs (checkpoint-*, final/, metrics.jsonl, run.json) and never your files, so nothing was deleted. "
                   if overwrite else "")
                + "Fix: move those files out of that folder, or choose another train.output_dir (a new or empty folder)."
            )
        if not overwrite:
            raise SftlabError(f"output folder {out.resolve()} is not empty: pass --resume to continue that run or --overwrite to replace it")
        for path in ours:  # sftlab_outputs never counts a symlink as ours
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    probe = out / ".write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)  # inside the try: a file in the path raises NotADirectoryError
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SftlabError(f"output folder {out.resolve()} is not writable: {e}") from e


# What sftlab writes into train.output_dir: train (metrics.jsonl, run.json and its temp file, the
# write probe), quickstart (report.html/json), ablate (ablation_variant.json); checkpoint folders and
# their temp folders hold only CHECKPOINT_FILES + MARKER; final/ holds what save_model writes.
RUN_FILES = {"metrics.jsonl", "run.json", ".run.json.tmp", ".write-test", "report.html", "report.json", "ablation_variant.json"}
FINAL_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "adapter_config.json", "adapter_model.safetensors", "README.md",  # peft writes a model card
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
    "chat_template.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
}
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def sftlab_outputs(out: Path) -> tuple[list[Path], list[str]]:
    """(sftlab's own outputs in `out`, everything else as relative names). A checkpoint or final/
    folder with anything sftlab does not write inside counts as someone else's (its odd files are
    named); symlinks are never sftlab's."""
    ours, foreign = [], []
    for path in sorted(out.iterdir()):
        name = path.name
        if path.is_symlink():
            foreign.append(name)
        elif path.is_file() and name in RUN_FILES:
            ours.append(path)
        elif path.is_dir() and name == tracking.TRACKING_DIR:  # train.report_to's logs: whatever the trackers write
            ours.append(path)
        elif path.is_dir() and (re.fullmatch(r"checkpoint-\d+", name) or name.startswith(TEMP_PREFIX) or name == "final"):
            allowed = (lambda n: n in FINAL_FILES or _SHARD.fullmatch(n)) if name == "final" else (lambda n: n in CHECKPOINT_FILES or n == MARKER)
            odd = [f"{name}/{p.name}" + ("/" if p.is_dir() else "") for p in sorted(path.iterdir())
                   if p.is_symlink() or not p.is_file() or not allowed(p.name)]
            (foreign.extend(odd) if odd else ours.append(path))
        else:
            foreign.append(name + ("/" if path.is_dir() else ""))
    return ours, foreign


def check_resume_meta(state: Resumed, meta: dict, force: bool, log) -> None:
    """Refuse (or, with --force-resume, warn about) a checkpoint saved with another config or data,
    naming the config keys that changed."""
    what = []
    old_fp, new_fp = state.meta.get("config_fingerprint"), meta["config_fingerprint"]
    if old_fp != new_fp:
        what.append("the config changed since it was saved" + describe_config_change(state.meta.get("config"), meta["config"], old_fp, new_fp))
    old_fp, new_fp = state.meta.get("data_fingerprint"), meta["data_fingerprint"]
    if old_fp != new_fp:
        what.append(f"the data changed since it was saved (fingerprint {old_fp} -> {new_fp}: the training rows, their order, "
                    "or the data/template settings now give other tokenized examples)")
    if not what:
        return
    if force:
        log(f"warning: resuming from {state.path} anyway (--force-resume): " + what[0] + "".join(f"\n    and {w}" for w in what[1:]))
        return
    raise SftlabError(
        f"cannot resume from {state.path}: " + what[0] + "".join(f"\n    and {w}" for w in what[1:]) + "\n"
        "    fix: resume with the config and data it was saved with (undo those changes), choose a new train.output_dir "
        "to start a separate run, or pass --force-resume to continue this run with the new settings (every key: docs/config.md)"
    )


def describe_config_change(old: dict | None, new: dict, old_fp: str | None, new_fp: str) -> str:
    """':\\n    train.lr: 0.0002 -> 0.0001' for each key that changed (keys that do not change the result
    are left out), or why the keys cannot be named."""
    from sftlab.config import MOVED_KEYS

    if not isinstance(old, dict):
        return (f" (fingerprint {old_fp} -> {new_fp}; the checkpoint was saved by an older sftlab that did not record "
                "the config, so the changed keys cannot be listed: compare with run.json or your YAML)")
    a, b = _flatten(old), _flatten(new)
    ignore = {"train.output_dir", "train.save_every", "train.keep_checkpoints", "train.report_to", *MOVED_KEYS}
    changed = [k for k in sorted(a.keys() | b.keys()) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    changed = [k for k in changed if k not in ignore and not k.startswith("train.speed.")]
    if not changed:  # e.g. saved before train.speed existed, when train.loss_chunk_tokens was hashed
        return (f" (fingerprint {old_fp} -> {new_fp}, but no key that changes the result differs: it was saved by an sftlab "
                "version that hashed the config differently, e.g. before train.speed (then --force-resume continues the same "
                "run) or before the data order of 2026-12-02 (then it would continue on another data order))")
    show = lambda v: "(not set)" if v == "<unset>" else json.dumps(v)  # noqa: E731
    lines = [f"    {k}: {show(a.get(k, '<unset>'))} -> {show(b.get(k, '<unset>'))}" for k in changed[:20]]
    if len(changed) > 20:
        lines.append(f"    ... and {len(changed) - 20} more")
    return ":\n" + "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def finished_result(out: Path, step: int) -> TrainResult:
    """What a finished run reports when resumed again (from its run.json; nothing is written)."""
    try:
        saved = json.loads((out / "run.json").read_text()).get("result", {})
    except (OSError, ValueError, AttributeError):
        saved = {}
    loss = saved.get("final_loss")
    return TrainResult(out, out / "final", step, float("nan") if loss is None else loss, saved.get("eval_loss"),
                       saved.get("trained_tokens", 0), 0.0, "", saved.get("nonfinite_skipped_steps", 0), [],
                       saved.get("eval_accuracy"), saved.get("best"), saved.get("early_stopped", ""))


def length_loss_warning(report, threshold: float = 0.05) -> str:
    """A warning when the length policy loses more than `threshold` of the trained tokens, with the fix."""
    lost = report.trained_tokens_in - report.trained_tokens_out
    if report.trained_tokens_in <= 0 or lost <= threshold * report.trained_tokens_in:
        return ""
    fix = "raise data.max_len" + (" or set data.length_policy: split (keeps every piece of a long example)" if report.policy != "split" else "")
    return (f"data.length_policy '{report.policy}' at data.max_len {report.max_len} loses {lost} of {report.trained_tokens_in} trained tokens "
            f"({100 * lost / report.trained_tokens_in:.1f}%): {report.too_long} of {report.examples_in} examples are longer than max_len "
            f"({report.dropped} dropped, {report.truncated} truncated, split into {report.split_into} pieces, "
            f"{report.partial_turns_untrained} cut assistant turns left untrained). Fix: {fix}.")


def run_record(cfg: RunConfig, result: TrainResult, data: Prepared, start_step: int, metrics_path: Path) -> dict:
    """run.json: config, result, and the data numbers (the length report as numbers, not only text)."""
    res = _jsonable(result)
    if not math.isfinite(result.final_loss) and metrics_path.exists():  # no step ran in this session (resumed at the end)
        lines = [x for x in metrics_path.read_text().splitlines() if x.strip()]
        res["final_loss"] = json.loads(lines[-1]).get("loss") if lines else None
    rep = data.length_report
    length = {k: v for k, v in rep.__dict__.items() if k != "dropped_ids"}
    length["trained_tokens_lost"] = rep.trained_tokens_in - rep.trained_tokens_out
    length["trained_tokens_lost_fraction"] = round(length["trained_tokens_lost"] / max(1, rep.trained_tokens_in), 6)
    length["dropped_ids_first"] = list(rep.dropped_ids[:20])
    return {
        "config": cfg.model_dump(mode="json"),
        "result": res,
        "resumed_from_step": start_step,  # result.trained_tokens/seconds count this session's steps only
        "data": {"summary": data.summary(), "fingerprint": data.fingerprint, "length": length,
                 "length_warning": length_loss_warning(rep) or None},
    }


def check_free_space(out: Path, model) -> None:
    """Refuse to start when the output filesystem cannot hold the checkpoints we will write.

    One checkpoint = trainable weights + AdamW's two moment tensors per trainable weight (3x), and
    the final model = all weights. A save writes the new checkpoint beside the newest old one before
    deleting anything, so ask for 2x (checkpoint + final) of free space.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    estimate = trainable * 3 + weights
    need = 2 * estimate
    free = shutil.disk_usage(out).free
    if free < need:
        raise SftlabError(
            f"not enough free disk space in {out.resolve()}: {free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB needed "
            f"(2 x {estimate / 2**20:.1f} MiB: a checkpoint of {trainable / 2**20:.1f} MiB trainable weights x 3 for AdamW "
            f"states, plus the final model of {weights / 2**20:.1f} MiB). Free space or choose another train.output_dir."
        )


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(dumps_json(record) + "\n")  # strict JSON: a non-finite value (e.g. an inf grad_norm) is null
        f.flush()


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget metrics logged after the checkpoint so the log matches an unbroken run."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line was being appended when the run was killed
                print(f"{path}: dropped a half-written last line ({len(line)} chars) left by the interrupted run")
                continue
            raise SftlabError(f"{path}:{i + 1}: not valid JSON; fix or delete that line, then resume") from None
        if record["step"] <= step:
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


@contextlib.contextmanager
def stop_signals():
    """Inside the block SIGINT/SIGTERM append their name to the yielded list (the loop finishes the
    step, saves and stops); a second one raises KeyboardInterrupt. Handlers restored on exit."""
    requested: list[str] = []
    previous = install_stop_handlers(requested)
    try:
        yield requested
    finally:
        restore_handlers(previous)


def install_stop_handlers(flag: list[str]):
    def handler(signum, _frame):
        if flag:  # a second signal: the user does not want to wait for the step and the save
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without saving")
        flag.append(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread (e.g. a notebook worker): no handler
            pass
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, h in previous.items():
        signal.signal(sig, h)


def _jsonable(result: TrainResult) -> dict:
    d = dict(result.__dict__)
    d["output_dir"], d["final_dir"] = str(result.output_dir), str(result.final_dir)
    return d
