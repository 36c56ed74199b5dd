"""Evaluate vision-language models side by side on held-out questions about held-out images.

For each model: greedy answers to every eval question (through the model's own processor and chat
template in plain transformers — no sftlab rendering code — so what is scored is what a user of the
saved folder gets), graded by a checker per question family; accuracy per family and per group
(seen families, never-trained families, all) with 95% bootstrap intervals; paired differences
against the first model (the same questions); and the response loss / perplexity of the gold answers
(the same masked loss as training, on the eval rows). `write_report` makes one HTML page with image
thumbnails next to each model's answers.

Beside the models, a blind reference: the accuracy of answering every question of a family with that
family's most common gold answer. On the built-in shapes suite a model that has learned only the
answer format (a number, "Yes."/"No.") can reach it without looking at the image, so a gain up to
it says "format", a gain beyond it says "perception".
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sftlab.conversation import Conversation
from sftlab.evaluate.bootstrap import Estimate, mean_ci, paired_diff_ci, perplexity_ci, perplexity_diff_ci

GROUPS = ("seen", "held-out", "all")


@dataclass
class ModelResult:
    answers: list[str]
    correct: list[int]
    loss_sums: list[float]
    n_tokens: list[int]
    seconds: float = 0.0


@dataclass
class VisionEval:
    conversations: list[Conversation]
    results: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return list(self.results)

    def _index(self, group: str) -> list[int]:
        convs = self.conversations
        if group == "all":
            return list(range(len(convs)))
        if group in ("seen", "held-out"):
            return [i for i, c in enumerate(convs) if c.meta.get("split") == group]
        return [i for i, c in enumerate(convs) if c.meta.get("family") == group]

    def accuracy(self, model: str, group: str) -> Estimate:
        idx = self._index(group)
        return mean_ci([self.results[model].correct[i] for i in idx])

    def accuracy_diff(self, base: str, other: str, group: str) -> Estimate:
        idx = self._index(group)
        return paired_diff_ci([self.results[base].correct[i] for i in idx], [self.results[other].correct[i] for i in idx])

    def constant_baseline(self, group: str) -> float:
        """Accuracy of answering each family's questions with its most common gold answer (read off these
        questions, so the best any constant-per-family answerer can do), averaged over `group`'s questions."""
        idx = self._index(group)
        by_family: dict[str, Counter] = {}
        for i in idx:
            c = self.conversations[i]
            by_family.setdefault(c.meta.get("family", "?"), Counter())[c.last_response.strip().lower()] += 1
        return sum(max(n.values()) for n in by_family.values()) / len(idx) if idx else float("nan")

    def above_blind(self, model: str, group: str, estimate: Estimate | None = None) -> bool:
        """The model's accuracy interval lies above the blind constant: it reads something off the images.
        `estimate`: the model's accuracy on `group` when the caller has it (saves a second bootstrap)."""
        low = (estimate or self.accuracy(model, group)).low
        return not math.isnan(low) and low > self.constant_baseline(group)

    def perplexity(self, model: str) -> Estimate:
        r = self.results[model]
        return perplexity_ci(r.loss_sums, r.n_tokens)

    def perplexity_diff(self, base: str, other: str) -> Estimate:
        return perplexity_diff_ci(self.results[base].loss_sums, self.results[other].loss_sums, self.results[base].n_tokens)

    def families(self) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for c in self.conversations:
            seen.setdefault(c.meta.get("family", "?"), c.meta.get("split", "?"))
        return sorted(seen.items(), key=lambda kv: (kv[1] != "seen", kv[0]))

    def summary_table(self) -> str:
        base, *others = self.models
        head = (f"{'':34s}" + "".join(f"{m:>24s}" for m in self.models) + "".join(f"{m + ' - ' + base:>30s}" for m in others)
                + f"{'blind constant':>16s}")
        lines = [head]
        rows = [(f"accuracy, {g} families" if g != "all" else "accuracy, all questions", g) for g in GROUPS]
        rows += [(f"  {f} ({s})", f) for f, s in self.families()]
        for label, g in rows:
            n = len(self._index(g))
            ests = {m: self.accuracy(m, g) for m in self.models}
            cells = "".join(f"{e.format(1, pct=True) + (' ^' if self.above_blind(m, g, e) else ''):>24s}" for m, e in ests.items())
            diffs = ""
            for m in others:
                d = self.accuracy_diff(base, m, g)
                diffs += f"{d.format(1, pct=True) + (' *' if d.excludes_zero() else ''):>30s}"
            lines.append(f"{label + f' (n={n})':34s}{cells}{diffs}{self.constant_baseline(g) * 100:>15.1f}%")
        ppl = "".join(f"{self.perplexity(m).format(3):>24s}" for m in self.models)
        pdiff = "".join(f"{self.perplexity_diff(base, m).format(3):>30s}" for m in others)
        lines.append(f"{'response perplexity (gold answers)':34s}{ppl}{pdiff}")
        lines.append("[low, high] = 95% bootstrap interval; * = the paired interval excludes 0; blind constant = each family "
                     "answered with its most common gold answer (what answer format alone earns); ^ = the interval lies above it")
        return "\n".join(lines)

    def to_json(self) -> dict:
        base, *others = self.models
        out = {"models": self.models, "n": len(self.conversations), "accuracy": {}, "paired_diff": {}, "perplexity": {}}
        groups = list(GROUPS) + [f for f, _ in self.families()]
        ests = {m: {g: self.accuracy(m, g) for g in groups} for m in self.models}
        for m in self.models:
            out["accuracy"][m] = {g: e.to_json() for g, e in ests[m].items()}
            out["perplexity"][m] = self.perplexity(m).to_json()
        for m in others:
            out["paired_diff"][f"{m} - {base}"] = {g: self.accuracy_diff(base, m, g).to_json() for g in groups}
            out["paired_diff"][f"{m} - {base}"]["perplexity"] = self.perplexity_diff(base, m).to_json()
        out["blind_constant"] = {g: self.constant_baseline(g) for g in groups}
        out["above_blind"] = {m: {g: self.above_blind(m, g, e) for g, e in ests[m].items()} for m in self.models}
        out["items"] = [{"id": c.id, "family": c.meta.get("family"), "split": c.meta.get("split"), "image": c.images[0] if c.images else None,
                         "question": c.prompt_messages[-1].content, "gold": c.last_response,
                         **{m: {"answer": r.answers[i], "correct": bool(r.correct[i])} for m, r in self.results.items()}}
                        for i, c in enumerate(self.conversations)]
        return out


@torch.no_grad()
def answer(model, processor, convs: list[Conversation], *, max_new_tokens: int = 24, batch_size: int = 16,
           desc: str = "answer") -> list[str]:
    """Greedy answers to each conversation's prompt (everything before its last assistant turn), with
    its images, through the processor's chat template; batched with left padding."""
    from sftlab.multimodal.images import load_image

    tok = processor.tokenizer
    stop_ids = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(i, int) and i >= 0]
    model.eval()
    out: list[str] = []
    for start in tqdm(range(0, len(convs), batch_size), desc=desc, unit="batch", leave=False):
        chunk = convs[start: start + batch_size]
        texts = [processor.apply_chat_template([m.to_dict() for m in c.prompt_messages], tokenize=False, add_generation_prompt=True)
                 for c in chunk]
        images = [load_image(ref) for c in chunk for ref in c.images]
        padding_side = tok.padding_side
        tok.padding_side = "left"
        try:
            inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = padding_side
        gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=tok.pad_token_id)
        new = gen[:, inputs["input_ids"].shape[1]:]
        out += [tok.decode([t for t in row.tolist() if t not in stop_ids and t != tok.pad_token_id], skip_special_tokens=True).strip()
                for row in new]
    return out


@torch.no_grad()
def answer_losses(model, processor, convs: list[Conversation], *, tokens_per_row: int = 1024,
                  shared_prefix: bool = True) -> tuple[list[float], list[int]]:
    """(summed cross-entropy, trained tokens) of each conversation's assistant turns, as training counts them.

    The examples are packed back to back, in order, into rows of <= `tokens_per_row` tokens (position_ids
    restart per example, so no attention crosses examples: tests/test_pack.py), one forward per row: one
    forward per ~60-token example took ~70 s of the demo's evaluation per model on 2 cores (measured).
    `shared_prefix`: the tokens every example starts with (the template's default system prompt: 24 of
    the demo's ~75) are read once, as a KV cache (speed/shared_prefix.py; same losses up to rounding)."""
    from sftlab.loss import per_token_losses
    from sftlab.multimodal.vision import VisionInputs
    from sftlab.pack import IGNORE, PackedDataset, collate_packed
    from sftlab.render import Renderer
    from sftlab.speed.shared_prefix import SharedPrefix, shared_prefix_ids

    renderer = Renderer(processor.tokenizer)
    vision = VisionInputs(processor)
    rows = vision.expand(renderer.render_batch(convs), convs)
    counts = [int((collate_packed([r]).labels != IGNORE).sum()) for r in rows]
    ds = PackedDataset(rows, tokens_per_row, order="as_given", vision=vision)
    ids = shared_prefix_ids(rows) if shared_prefix else []
    prefix = SharedPrefix(ids) if ids else None
    model.eval()
    sums: list[float] = []
    for b in range(len(ds)):
        batch = ds.batch(b)
        losses = per_token_losses(model, prefix.prepare(model, batch) if prefix else batch).tolist()
        want = sum(counts[i] for i in ds.bins[b])
        if len(losses) != want:
            raise RuntimeError(f"packed row {b}: {len(losses)} trained-token losses for {want} trained tokens")
        start = 0
        for i in ds.bins[b]:  # the row's losses are its examples' trained tokens, example after example
            sums.append(float(sum(losses[start: start + counts[i]])))
            start += counts[i]
    return sums, counts


def evaluate_vision(models: dict[str, tuple], convs: list[Conversation], check: Callable[[Conversation, str], bool], *,
                    max_new_tokens: int = 24, batch_size: int = 16, log=print) -> VisionEval:
    """`models`: name -> (model, processor), the first one is the baseline of the paired differences."""
    import time

    ev = VisionEval(convs)
    for name, (model, processor) in models.items():
        t0 = time.time()
        answers = answer(model, processor, convs, max_new_tokens=max_new_tokens, batch_size=batch_size, desc=f"answer ({name})")
        sums, counts = answer_losses(model, processor, convs)
        ev.results[name] = ModelResult(answers, [int(check(c, a)) for c, a in zip(convs, answers)], sums, counts, time.time() - t0)
        log(f"{name}: {sum(ev.results[name].correct)}/{len(convs)} correct ({time.time() - t0:.0f} s)")
    return ev


def _thumb(ref: str | None, scale: int = 2) -> str:
    if not ref:
        return ""
    from sftlab.multimodal.images import load_image

    im = load_image(ref)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    w, h = im.size
    return (f'<img class="thumb" width="{w * scale}" height="{h * scale}" alt="image" '
            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">')


def write_report(ev: VisionEval, path: str | Path, *, title: str = "sftlab: vision-language evaluation", notes: str = "",
                 metrics: dict[str, Path] | None = None, per_family: int = 6) -> Path:
    """HTML: the accuracy table with intervals, a per-family plot, training curves, and for each family
    a few questions with the image and every model's answer (right ones green, wrong ones red)."""
    from sftlab.html_page import figure_png, img, pyplot, write_page

    base, *others = ev.models
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='note'>{html.escape(notes)}</p>" if notes else "",
            "<h2>Accuracy and response perplexity</h2>", f"<pre>{html.escape(ev.summary_table())}</pre>"]
    plt = pyplot()
    fams = ev.families()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(ev.models)
    for k, m in enumerate(ev.models):
        ests = [ev.accuracy(m, f) for f, _ in fams]
        xs = [i + (k - (len(ev.models) - 1) / 2) * width for i in range(len(fams))]
        ax.bar(xs, [e.value * 100 for e in ests], width, label=m,
               yerr=[[max(0.0, (e.value - e.low) * 100) if not math.isnan(e.low) else 0 for e in ests],
                     [max(0.0, (e.high - e.value) * 100) if not math.isnan(e.high) else 0 for e in ests]], capsize=2)
    ax.scatter(range(len(fams)), [ev.constant_baseline(f) * 100 for f, _ in fams], marker="_", s=600, color="black", zorder=3,
               label="blind constant (most common gold answer)")
    ax.set_xticks(range(len(fams)), [f"{f}\n({s})" for f, s in fams], fontsize=7)
    ax.set_ylabel("accuracy %")
    ax.legend(fontsize=8)
    body.append(img(figure_png(fig), "accuracy per family"))
    if metrics:
        fig, ax = plt.subplots(figsize=(7, 3))
        for name, mp in metrics.items():
            if Path(mp).is_file():
                recs = [json.loads(line) for line in Path(mp).read_text().splitlines() if line.strip()]
                ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=8)
        body.append("<h2>Training loss</h2>" + img(figure_png(fig), "training loss"))
    body.append("<h2>Answers, side by side</h2><p class='note'>Held-out images; the first questions of each family.</p>")
    for fam, split in fams:
        idx = ev._index(fam)[:per_family]
        rows = []
        for i in idx:
            c = ev.conversations[i]
            cells = "".join(
                f"<td class='{'ok' if ev.results[m].correct[i] else 'bad'}'>{html.escape(ev.results[m].answers[i]) or '<i>(empty)</i>'}</td>"
                for m in ev.models)
            rows.append(f"<tr><td>{_thumb(c.images[0] if c.images else None)}</td><td>{html.escape(c.prompt_messages[-1].content.replace('<image>', '').strip())}</td>"
                        f"<td>{html.escape(c.last_response)}</td>{cells}</tr>")
        head = "".join(f"<th>{html.escape(m)}</th>" for m in ev.models)
        body.append(f"<h3>{html.escape(fam)} ({html.escape(split)})</h3><table><tr><th>image</th><th>question</th><th>gold</th>{head}</tr>"
                    + "".join(rows) + "</table>")
    css = "img.thumb{image-rendering:pixelated;border:1px solid #ccc} td.ok{background:#e6f4ea} td.bad{background:#fce8e6}"
    return write_page(path, title, "\n".join(body), css)
