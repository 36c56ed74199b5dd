"""Evaluation during training: what train.py's loop calls every `train.eval_every` steps.

- eval loss on data.eval (train.evaluate_loss, passed in) -> `eval_loss`
- optionally (train.eval_generate) greedy answers to a small prompt set, graded -> `eval_accuracy`
  (built-in task prompts by their suite's checkers, `sftlab.builtin.grading.check_answer`; any other
  source by exact match of the gold answer after `normalise_response`, case-insensitive)
- the best value of `train.best_metric` so far, its step, and how many evaluations since it
  improved (`Best`): saved in every checkpoint's meta (`meta["evaluation"]`), so it survives resume
- early stopping: `train.early_stopping_patience` evaluations in a row without an improvement by more
  than `train.early_stopping_min_delta` ends the run cleanly. Unlike a SIGINT or non-finite stop
  (`Outcome.stopped_early`: no final/), a planned early stop saves the last checkpoint and final/.

The best checkpoint: when an evaluation improves the best, that step's checkpoint is saved (if
save_every would not save it anyway) and kept besides the newest `keep_checkpoints` (save_checkpoint's
`protect`). At the end final/ is written from it (`load_best`), and run.json's result.best names the
step, the value and why. With best_metric set the last step is always evaluated, so the model the
run ended with is a candidate too; the best is chosen among the evaluations in metrics.jsonl.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sftlab.config import BEST_METRICS, EvalGenerateConfig, TrainConfig
from sftlab.conversation import Conversation
from sftlab.errors import SftlabError


# ---- the best value so far and early stopping: pure bookkeeping, saved with each checkpoint ------------
@dataclass
class Best:
    metric: str | None  # train.best_metric
    value: float | None = None
    step: int | None = None
    metrics: dict = field(default_factory=dict)  # every metric of the best evaluation
    evals_since: int = 0  # evaluations since the best improved
    stopped: str = ""  # why the run stopped early (patience), once it has

    def better(self, value: float, min_delta: float) -> bool:
        if self.value is None:
            return True
        if BEST_METRICS[self.metric] == "min":
            return value < self.value - min_delta
        return value > self.value + min_delta


class TrainEval:
    """What evaluates during training and remembers the best: one per run (Run.evals)."""

    def __init__(self, tc: TrainConfig, generation: GenerationEval | None = None):
        self.tc = tc
        self.generation = generation
        self.best = Best(tc.best_metric)
        self.last_step: int | None = None  # the step of the newest evaluation, and its metrics
        self.last: dict = {}

    @property
    def tracks_best(self) -> bool:
        return self.tc.best_metric is not None

    def due(self, step: int, total_steps: int) -> bool:
        """Evaluate after `step`: every eval_every steps, and at the last step when a best is kept."""
        every = self.tc.eval_every
        return bool(every) and (step % every == 0 or (self.tracks_best and step == total_steps))

    def evaluate(self, step: int, model, accelerator, eval_loss) -> dict:
        """{"eval_loss": ..., "eval_accuracy": ...} (what is configured) of `model` after `step`.
        `eval_loss()`: the eval loss, or None without eval data."""
        metrics = {}
        loss = eval_loss()
        if loss is not None:
            metrics["eval_loss"] = round(loss, 6)
        if self.generation is not None:
            metrics["eval_accuracy"] = round(self.generation.accuracy(model, accelerator), 6)
        self.last_step, self.last = step, metrics
        return metrics

    def metrics_at(self, step: int) -> dict | None:
        return dict(self.last) if self.last_step == step else None

    def observe(self, step: int, metrics: dict) -> bool:
        """Record an evaluation; True when it is a new best (its checkpoint must be kept)."""
        if not self.tracks_best:
            return False
        value = metrics.get(self.best.metric)
        if value is None or not math.isfinite(value):
            raise SftlabError(f"train.best_metric: {self.best.metric} is {value} at step {step}; "
                              "the run cannot choose a best checkpoint by it (check the eval data)")
        if self.best.better(value, self.tc.early_stopping_min_delta):
            self.best.value, self.best.step, self.best.metrics, self.best.evals_since = value, step, dict(metrics), 0
            return True
        self.best.evals_since += 1
        patience = self.tc.early_stopping_patience
        if patience is not None and self.best.evals_since >= patience:
            self.best.stopped = (
                f"early stopping after step {step}: {self.best.metric} did not improve on {self.best.value:g} (step {self.best.step}) "
                f"for {self.best.evals_since} evaluations (train.early_stopping_patience={patience}, "
                f"min_delta={self.tc.early_stopping_min_delta:g})")
        return False

    @property
    def stop_reason(self) -> str:
        return self.best.stopped

    def protected(self) -> frozenset[int]:
        """Checkpoint steps pruning must keep: the best one."""
        return frozenset() if self.best.step is None else frozenset({self.best.step})

    def state(self) -> dict:
        """What a checkpoint's meta keeps (meta["evaluation"])."""
        return asdict(self.best)

    def restore(self, saved: dict | None) -> None:
        if self.tracks_best and isinstance(saved, dict) and saved.get("metric") == self.best.metric:
            self.best = Best(**{k: saved[k] for k in asdict(self.best) if k in saved})

    def summary(self, final_step: int, final_from: int) -> dict | None:
        """run.json result.best: which step final/ holds, and why."""
        if not self.tracks_best:
            return None
        b = self.best
        direction = "lowest" if BEST_METRICS[b.metric] == "min" else "highest"
        why = (f"train.best_metric: {b.metric}: the {direction} value in metrics.jsonl, {b.value:g} at step {b.step} "
               f"(a tie, or a change within early_stopping_min_delta {self.tc.early_stopping_min_delta:g}, keeps the earlier step)")
        if final_from != final_step:
            why += f"; final/ holds that step's weights, not the last step's ({final_step})"
        return {"metric": b.metric, "mode": BEST_METRICS[b.metric], "value": b.value, "step": b.step, "metrics": b.metrics,
                "checkpoint": f"checkpoint-{b.step:07d}" if b.step is not None else None, "final_from_step": final_from,
                "last_step": final_step, "why": why}


def load_best(out: Path, step: int, model) -> str | None:
    """Copy checkpoint-<step>'s weights into `model`; None when done, else why it could not be."""
    from sftlab.checkpoint import CheckpointDamaged, read_checkpoint

    path = Path(out) / f"checkpoint-{step:07d}"
    if not path.is_dir():
        return f"{path.name} is missing"
    try:
        weights = read_checkpoint(path).weights
    except CheckpointDamaged as e:
        return e.reason
    params = dict(model.named_parameters())
    unknown = [n for n in weights if n not in params]
    if unknown:
        return f"{path.name} does not match the model (unknown tensors {unknown[:3]})"
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    return None


# ---- generation-based accuracy --------------------------------------------------------------------------
@dataclass
class GenerationEval:
    """Prompts with gold answers, generated greedily and graded at every evaluation."""

    conversations: list[Conversation]
    renderer: object  # sftlab.render.Renderer
    max_new_tokens: int
    batch_size: int

    @classmethod
    def load(cls, gc: EvalGenerateConfig, tokenizer) -> GenerationEval:
        from sftlab.data.config import SourceConfig
        from sftlab.render import Renderer

        convs = [c for c in SourceConfig(path=gc.source).load().conversations if c.last_assistant_index() is not None]
        if not convs:
            raise SftlabError(f"train.eval_generate.source {gc.source!r}: no conversation with an assistant answer to grade against")
        return cls(spread(convs, gc.limit), Renderer(tokenizer), gc.max_new_tokens, gc.batch_size)

    def answers(self, model, indices: list[int]) -> list[str]:
        from sftlab.generate import SamplingParams, generate_batch

        prompts = [[m.to_dict() for m in self.conversations[i].prompt_messages] for i in indices]
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        return generate_batch(model, self.renderer, prompts, params, batch_size=self.batch_size, progress=False) if prompts else []

    def accuracy(self, model, accelerator) -> float:
        """Fraction of the prompts answered right; each process generates its share (every world-th prompt)."""
        mine = list(range(accelerator.process_index, len(self.conversations), accelerator.num_processes))
        model = accelerator.unwrap_model(model)
        answers = self.answers(model, mine)
        right = torch.tensor(float(sum(grade(self.conversations[i], a) for i, a in zip(mine, answers))), device=accelerator.device)
        right = float(accelerator.reduce(right, reduction="sum"))
        return right / len(self.conversations)


def grade(conversation: Conversation, answer: str) -> bool:
    """A built-in task example (either suite) by its checker; anything else by normalised,
    case-insensitive exact match."""
    from sftlab.builtin.grading import check_answer, gradable
    from sftlab.builtin.tasks import normalise_response

    if gradable(conversation):
        return check_answer(conversation, answer)
    return normalise_response(answer).casefold() == normalise_response(conversation.last_response).casefold()


def spread(convs: list[Conversation], limit: int) -> list[Conversation]:
    """Up to `limit` conversations taken round-robin over their groups (meta family, else source), in
    order: the built-in eval set lists family after family, so its first 40 would be one family."""
    groups: dict[str, list[Conversation]] = {}
    for c in convs:
        groups.setdefault(str(c.meta.get("family") or c.source or ""), []).append(c)
    out: list[Conversation] = []
    queues = [list(reversed(g)) for g in groups.values()]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop())
    return out
