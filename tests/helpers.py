"""Helpers shared by test modules (test modules import from here and from tiny.py, never from each
other): tiny run set-ups on disk, random rendered rows, a reference loss, and a scripted
OpenAI-compatible teacher (the CLI error cases are in error_cases.py).

No `from __future__ import annotations` here: FastAPI reads scripted_app's `request: Request`
annotation as a real class."""

import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from sftlab.render import Rendered
from tiny import make_model, make_tokenizer

# ---- a small FLAN-style registry (sftlab.builtin.flan) for mixture and report tests ---------------------

def fake_flan_registry(monkeypatch):
    """Replace the flan registry with 4 clusters of the older suite's generators, 8 templates each:
    letters (reverse_word, uppercase, multi-turn spell_back; held out: remove_vowels), arithmetic (add,
    multiply; held out: subtract), lists (sort_words, count_items, pick_colour: 10 colours x 8 templates =
    80 examples at most; held out: sort_numbers), and the held-out cluster comparison (parity, is_prime)."""
    from random import Random

    import sftlab.builtin.flan as flan
    from sftlab.builtin import tasks as bt
    from sftlab.builtin.flan.base import T, family

    def templates(name, *fields):
        body = " ".join("{" + f + "}" for f in fields)
        return [T(f"[{name} {i}] Do the task on: {body}") for i in range(8)]

    def colour(rng):
        c = rng.choice(["red", "green", "blue", "black", "white", "pink", "grey", "brown", "gold", "cyan"])
        return {"c": c}, c

    spec = {  # cluster -> [(name, generator, fields, compare)]
        "letters": [("reverse_word", bt.gen_reverse_word, ("word",), "text"), ("uppercase", bt.gen_uppercase, ("text",), "text_cs"),
                    ("remove_vowels", bt.gen_remove_vowels, ("word",), "text")],
        "arithmetic": [("add", bt.gen_add, ("a", "b"), "number"), ("multiply", bt.gen_multiply, ("a", "b"), "number"),
                       ("subtract", bt.gen_subtract, ("a", "b"), "number")],
        "lists": [("sort_words", bt.gen_sort_words, ("items",), "list"), ("count_items", bt.gen_count_items, ("items",), "number"),
                  ("pick_colour", colour, ("c",), "text"), ("sort_numbers", bt.gen_sort_numbers, ("items",), "list")],
        "comparison": [("parity", bt.gen_parity, ("n",), "text"), ("is_prime", bt.gen_is_prime, ("n",), "text")],
    }
    families, clusters = {}, {}
    for cluster, fams in spec.items():
        for name, gen, fields, compare in fams:
            tpl = templates(name, *fields)
            families[name] = family(name, cluster, name, gen, *tpl, compare=compare)
        clusters[cluster] = tuple(n for n, *_ in fams)
    spell = family("spell_back", "letters", "multi-turn reverse", bt.gen_reverse_word,
                   T(("I have a word for you.", "Sure, which word?", "{word}. Write it backwards.")),
                   *templates("spell_back", "word")[1:], compare="text")
    families["spell_back"] = spell
    clusters["letters"] += ("spell_back",)
    monkeypatch.setattr(flan, "FAMILIES", families)
    monkeypatch.setattr(flan, "CLUSTERS", clusters)
    monkeypatch.setattr(flan, "HELDOUT_CLUSTERS", ("comparison",))
    monkeypatch.setattr(flan, "HELDOUT_FAMILIES", ("remove_vowels", "subtract", "sort_numbers"))
    return flan


# ---- a run on disk: tiny model folder, data, config, a `sftlab train` process ----------------------
# (so a `sftlab train` subprocess sees exactly what a user's run would)

WORDS = ["apple", "lazy", "brown", "quick", "today", "there", "fine", "thank", "hello", "answer", "sort", "dog"]
ROWS = [
    {"messages": [{"role": "user", "content": f"Reverse the word {w}."}, {"role": "assistant", "content": w[::-1]}]}
    for w in WORDS * 2
]


def make_model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-model"
    if not folder.exists():
        make_model().save_pretrained(folder, safe_serialization=True)
        make_tokenizer().save_pretrained(folder)
    return folder


def write_data(path: Path, rows=ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_config(tmp_path: Path, out: str = "run", **train) -> dict:
    """Full fine-tuning in fp32, one micro-batch of <= 64 tokens per step, a checkpoint every step."""
    folder = make_model_folder(tmp_path)
    data = tmp_path / "data" / "train.jsonl"
    if not data.exists():
        write_data(data)
    return {
        "model": {"name": str(folder)},
        "lora": {"enabled": False},
        "data": {"train": [{"path": str(data)}], "max_len": 64},
        "train": {"output_dir": str(tmp_path / out), "lr": 1e-2, "max_steps": 12, "tokens_per_batch": 64,
                  "warmup_ratio": 0.0, "save_every": 1, "keep_checkpoints": 2, **train},
    }


def write_config(tmp_path: Path, cfg: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_process(config: Path, *args: str) -> subprocess.Popen:
    """`sftlab train CONFIG ...` as its own process (own process group, so signals reach only it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "sftlab.cli", "train", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) per metrics line; timing fields differ between runs by nature, losses must not."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(x)["step"], json.loads(x)["loss"]) for x in lines]


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


# ---- rendered rows and the loss computed independently ----------------------------------------------

def random_rendered(n, seed=0, vocab=400):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        L = rng.randint(3, 40)
        ids = [rng.randrange(3, vocab) for _ in range(L)]
        mask = [0] * (L // 2) + [1] * (L - L // 2)
        out.append(Rendered(ids, mask, [L], id=str(i)))
    return out


def reference_loss(model, exs):
    """Independent computation: each example alone, full logits, classic shift-by-one."""
    import torch
    import torch.nn.functional as F

    total, n = 0.0, 0
    for r in exs:
        ids = torch.tensor([r.input_ids])
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        target = ids[0, 1:].clone()
        target[torch.tensor(r.loss_mask[1:]) == 0] = -100
        total += F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        n += int(sum(r.loss_mask[1:]))
    return total, n


# ---- a scripted OpenAI-compatible teacher/judge: deterministic answers over real HTTP ---------------

VOCAB = [f"{a}{b}" for a in ("bel", "cor", "dun", "fal", "gim", "hor", "jin", "kel", "lum", "mor") for b in range(100)]


def scripted_reply(model: str, prompt: str, counter: int) -> str:
    """The scripted teacher/judge: answers depend only on the prompt (and a counter for variety)."""
    if "come up with a set of" in prompt:  # Self-Instruct
        m = re.search(r"numbered from Task (\d+) to Task (\d+)", prompt)
        lo, hi = int(m.group(1)), int(m.group(2))
        rng = random.Random(f"{prompt}:{counter}")
        lines = [f"Task {i}: Describe {' '.join(rng.sample(VOCAB, 8))} briefly." for i in range(lo, hi + 1)]
        # one of each rejection kind per reply
        lines += ["Task 90: Hi.", "Task 91: Draw a picture of a cat sitting on a warm mat.",
                  "Task 92: Explain in two sentences why the sky looks blue during the day.",
                  "Task 93: Sure, here are some more tasks for you to do today."]
        return "\n".join(lines)
    if "Prompt Rewriter" in prompt or "Prompt Creator" in prompt:  # Evol-Instruct
        parent = re.search(r"Given Prompt#:\n(.*)\n#(Rewritten|Created) Prompt#:", prompt, re.S).group(1)
        if "haiku" in parent:
            return "#Rewritten Prompt#: " + parent + " Use a kigo."
        if "riddle" in parent:
            return parent  # no change
        return parent + " Answer in exactly three numbered steps and justify each one."
    if prompt.startswith("Here are two Instructions"):
        return "Equal" if "French" in prompt else "Not Equal"
    if "rate according to the accuracy" in prompt:  # AlpaGasus judge
        if "excellent" in prompt:
            return "Score: 5\nThe response is accurate and complete."
        if "poor" in prompt:
            return "I would give this 2/5 because it misses the point."
        return "Hard to say."
    if "[The Start of Assistant A's Answer]" in prompt:  # MT-Bench pairwise
        if model == "biased":
            return "Both are fine. [[A]]"
        a = prompt.split("[The Start of Assistant A's Answer]")[1].split("[The End of Assistant A's Answer]")[0]
        b = prompt.split("[The Start of Assistant B's Answer]")[1].split("[The End of Assistant B's Answer]")[0]
        verdict = "C" if ("GOOD" in a) == ("GOOD" in b) else ("A" if "GOOD" in a else "B")
        return f"Comparing both answers. [[{verdict}]]"
    if "[The Start of Assistant's Answer]" in prompt:  # MT-Bench single
        ans = prompt.split("[The Start of Assistant's Answer]")[1]
        return "Helpful. Rating: [[8]]" if "GOOD" in ans else "Weak answer.\nRating: [[3]]"
    if "180 km" in prompt:
        return "Sorry, I cannot help with that."
    return f"Here is a careful answer to the request: {prompt[:60]}"


def scripted_app(delay_s: float = 0.0):
    from fastapi import FastAPI, Request

    app = FastAPI()
    app.state.counter = 0
    app.state.inflight = 0
    app.state.max_inflight = 0
    app.state.attempts = {}
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        import asyncio

        from fastapi.responses import JSONResponse

        body = await request.json()
        prompt = body["messages"][-1]["content"]
        model = body.get("model", "")
        with lock:
            app.state.counter += 1
            counter = app.state.counter
            n_try = app.state.attempts[prompt] = app.state.attempts.get(prompt, 0) + 1
        if model == "down":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model == "flaky" and n_try == 1:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0.3"})
        if model == "flaky" and n_try == 2:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if model == "bad-request":
            return JSONResponse({"error": {"message": "nope"}}, status_code=400)
        app.state.inflight += 1
        app.state.max_inflight = max(app.state.max_inflight, app.state.inflight)
        try:
            await asyncio.sleep(delay_s or (0.05 if model == "slow" else 0))
        finally:
            app.state.inflight -= 1
        text = scripted_reply(model, prompt, counter)
        return {"id": "x", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    return app
