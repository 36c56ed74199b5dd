"""Evol-Instruct (WizardLM, Xu et al. 2023): rewrite instructions into harder (in-depth) or new
(in-breadth) ones, answer them, and eliminate failed evolutions.

Round r evolves every row of round r-1 (round 1: the input instructions) with one method drawn
per parent. Elimination (each counted by reason): the teacher judges child and parent "Equal"
(no new information), leaked rewriting-prompt words, a refusal-like ("sorry") short answer, an
answer of only punctuation/stop words, a too-short answer. A row's id is `<parent id>-r<round>`,
so a resumed run skips parents already evolved; parents whose evolution was eliminated are
recorded in the state file and not retried.
"""

from __future__ import annotations

import random

from sftlab.conversation import Conversation
from sftlab.synth import filters, prompts
from sftlab.synth.backends import ChatBackend
from sftlab.synth.config import SynthConfig
from sftlab.synth.report import SynthReport
from sftlab.synth.self_instruct import load_instructions
from sftlab.synth.store import JsonlOutput, ProgressState, state_path

PHASH = prompts.prompt_hash(prompts.EVOL_DEPTH, prompts.EVOL_BREADTH, prompts.EVOL_EQUAL, *prompts.EVOL_METHODS.values())


def evolve_prompt(method: str, instruction: str) -> str:
    if method == "breadth":
        return prompts.EVOL_BREADTH.format(instruction=instruction)
    return prompts.EVOL_DEPTH.format(method=prompts.EVOL_METHODS[method], instruction=instruction)


def clean_evolved(text: str) -> str:
    """The teacher's rewritten instruction: surrounding whitespace and quotes removed. Leaked
    markers are NOT removed here -- they are an elimination rule."""
    return text.strip().strip('"').strip()


def says_equal(text: str) -> bool | None:
    low = text.strip().lower()
    if "not equal" in low:
        return False
    if "equal" in low:
        return True
    return None


def run_evol_instruct(cfg: SynthConfig, teacher: ChatBackend) -> SynthReport:
    ec = cfg.evol_instruct
    out = JsonlOutput(cfg.output)
    state = ProgressState(state_path(cfg.output))
    report = SynthReport("evol_instruct", cfg.output, rows_resumed=len(out.rows), truncated_bytes=out.truncated_bytes)
    base = load_instructions(ec.input)
    eliminated: dict[str, list[str]] = state.data.setdefault("eliminated", {})  # round -> parent ids
    try:
        for rnd in range(1, ec.rounds + 1):
            if rnd == 1:
                parents = base
            else:
                parents = [(r["id"], r["messages"][0]["content"]) for r in out.rows if r["meta"]["round"] == rnd - 1]
            done = set(eliminated.get(str(rnd), []))
            todo = [(pid, text) for pid, text in parents if f"{pid}-r{rnd}" not in out.ids and pid not in done]
            for start in range(0, len(todo), ec.batch_size):
                batch = todo[start : start + ec.batch_size]
                methods = [random.Random(f"{cfg.seed}:{rnd}:{pid}").choice(ec.methods) for pid, _ in batch]
                asks = [[{"role": "user", "content": evolve_prompt(m, text)}] for m, (_, text) in zip(methods, batch)]
                evolved = teacher.complete(asks, max_tokens=ec.max_tokens_instruction, temperature=ec.temperature, seed=cfg.seed + rnd)
                children = [clean_evolved(r.text) if r.ok else None for r in evolved]
                equal: list[bool | None] = [None] * len(batch)
                if ec.equality_check:
                    idx = [i for i, c in enumerate(children) if c]
                    checks = teacher.complete(
                        [[{"role": "user", "content": prompts.EVOL_EQUAL.format(parent=batch[i][1], child=children[i])}] for i in idx],
                        max_tokens=8, temperature=0.0, seed=cfg.seed)
                    for i, res in zip(idx, checks):
                        equal[i] = says_equal(res.text) if res.ok else None
                idx = [i for i, c in enumerate(children) if c]
                answers = dict(zip(idx, teacher.complete([[{"role": "user", "content": children[i]}] for i in idx],
                                                         max_tokens=ec.max_tokens_response, temperature=ec.temperature,
                                                         seed=cfg.seed + rnd)))
                for i, ((pid, parent), method) in enumerate(zip(batch, methods)):
                    child = children[i]
                    if child is None:
                        state.count("rejected", "evolve_call_failed")  # retried by the next run
                        continue
                    res = answers[i]
                    if not res.ok:
                        state.count("rejected", "response_call_failed")  # retried by the next run
                        continue
                    problem = filters.evolution_problem(parent, child, res.text, ec.min_response_words)
                    if problem is None and equal[i] is True:
                        problem = "no_new_information"
                    if problem:
                        state.count("rejected", problem)
                        eliminated.setdefault(str(rnd), []).append(pid)
                        continue
                    out.append(Conversation.from_messages(
                        [{"role": "user", "content": child}, {"role": "assistant", "content": res.text.strip()}],
                        id=f"{pid}-r{rnd}", source=f"synth:evol_instruct:{teacher.name}",
                        meta={"pipeline": "evol_instruct", "round": rnd, "method": method, "parent_id": pid,
                              "parent_instruction": parent, "teacher": teacher.name, "prompt_hash": PHASH,
                              "equality_check": equal[i], "seed": cfg.seed},
                    ))
                    report.rows_new += 1
                state.save_progress(teacher)
    finally:
        out.close()
        state.save_progress(teacher)
        report.fill(len(out.rows), state, teacher)
    return report
