"""Self-Instruct (Wang et al. 2022): seed tasks -> new instructions -> responses.

Each step asks the teacher `prompts_per_step` times for `new_per_prompt` new tasks, each prompt
showing k tasks sampled from the pool (mostly seeds, up to `machine_examples` generated ones).
Candidates pass heuristic filters and the ROUGE-L novelty filter (rejected when ROUGE-L F1 with
any pool instruction > 0.7), then the teacher answers them. Row ids are `self-instruct-00000`,
... in order of acceptance, so a resumed run continues the numbering from the rows on disk.
"""

from __future__ import annotations

import random
import re
import sys
import time

from sftlab.conversation import Conversation
from sftlab.synth import filters, prompts
from sftlab.synth.backends import ChatBackend
from sftlab.synth.config import BUILTIN_SEEDS, SynthConfig
from sftlab.synth.report import SynthReport
from sftlab.synth.store import JsonlOutput, ProgressState, state_path

TASK_LINE = re.compile(r"^\s*(?:\*\*)?(?:task\s*)?(\d+)\s*(?:\*\*)?\s*[:.)-]\s*(.+?)\s*$", re.IGNORECASE)


def load_instructions(source: str) -> list[tuple[str, str]]:
    """(id, instruction text) from builtin seeds or any data file (first user turn)."""
    from sftlab.data import load_conversations

    path = BUILTIN_SEEDS if source == "builtin" else source
    convs = load_conversations(path, require_response=False).conversations
    out = []
    for c in convs:
        user = next((m.content for m in c.messages if m.role == "user"), "")
        if user.strip():
            out.append((c.id, user.strip()))
    return out


def novelty_pool(seeds: list[str]) -> list[str]:
    """What new tasks must differ from: each seed as shown to the teacher and, for a seed with an
    input ("instruction\n\ninput", as Alpaca rows load), its instruction alone. Candidates are
    single lines, so against the full text a verbatim copy of a seed's instruction scored below
    the threshold (ROUGE-L 0.67 for "Translate the sentence into French." in a real run) and was
    kept as "new"."""
    pool = []
    for s in seeds:
        pool.append(s)
        head = s.split("\n\n", 1)[0].strip()
        if head and head != s:
            pool.append(head)
    return pool


def parse_tasks(text: str) -> list[str]:
    tasks = []
    for line in text.splitlines():
        m = TASK_LINE.match(line)
        if m:
            task = m.group(2).strip().strip('"').strip()
            if task:
                tasks.append(task)
    return tasks


def run_self_instruct(cfg: SynthConfig, teacher: ChatBackend) -> SynthReport:
    sc = cfg.self_instruct
    out = JsonlOutput(cfg.output)
    state = ProgressState(state_path(cfg.output))
    report = SynthReport("self_instruct", cfg.output, rows_resumed=len(out.rows), truncated_bytes=out.truncated_bytes)
    seeds = [text for _, text in load_instructions(sc.seed_tasks)]
    generated = [r["messages"][0]["content"] for r in out.rows]
    novelty = filters.NoveltyFilter(novelty_pool(seeds) + generated, sc.rouge_threshold)
    phash = prompts.prompt_hash(prompts.SELF_INSTRUCT)
    step = state.data.get("step", 0)
    if out.rows:  # the state file may lag the rows by one step
        step = max(step, max(r["meta"]["step"] for r in out.rows) + 1)
    n = len(out.rows)
    try:
        while n < sc.num_instructions:
            if step >= sc.max_steps:
                report.finished = False
                report.note = f"max_steps={sc.max_steps} reached with {n}/{sc.num_instructions} rows; raise max_steps or relax filters"
                break
            t_step = time.monotonic()
            rng = random.Random(f"{cfg.seed}:{step}")  # same step -> same examples, after a restart too
            asks = []
            for _ in range(sc.prompts_per_step):
                n_machine = min(sc.machine_examples, len(generated), sc.examples_per_prompt)
                examples = rng.sample(generated, n_machine) + rng.sample(seeds, min(len(seeds), sc.examples_per_prompt - n_machine))
                rng.shuffle(examples)
                k = len(examples)
                listing = "\n".join(f"Task {i + 1}: {e}" for i, e in enumerate(examples))
                text = prompts.SELF_INSTRUCT.format(n=sc.new_per_prompt, examples=listing, start=k + 1, end=k + sc.new_per_prompt)
                asks.append([{"role": "user", "content": text}])
            results = teacher.complete(asks, max_tokens=sc.max_tokens_instructions, temperature=sc.temperature, seed=cfg.seed + step)
            accepted: list[str] = []
            for res in results:
                if not res.ok:
                    state.count("rejected", "instruction_call_failed")
                    continue
                tasks = parse_tasks(res.text)
                if not tasks:
                    state.count("rejected", "no_tasks_parsed")
                for task in tasks:
                    problem = filters.instruction_problem(task, sc.min_words, sc.max_words)
                    if problem is None:
                        novel, _ = novelty.is_novel(task)
                        problem = None if novel else "too_similar_rouge_l"
                    if problem:
                        state.count("rejected", problem)
                        continue
                    novelty.add(task)
                    accepted.append(task)
            accepted = accepted[: sc.num_instructions - n]
            answers = teacher.complete([[{"role": "user", "content": t}] for t in accepted],
                                       max_tokens=sc.max_tokens_response, temperature=sc.temperature, seed=cfg.seed + step)
            for task, res in zip(accepted, answers):
                problem = "response_call_failed" if not res.ok else filters.response_problem(res.text, sc.min_response_words)
                if problem:
                    state.count("rejected", problem)
                    continue
                conv = Conversation.from_messages(
                    [{"role": "user", "content": task}, {"role": "assistant", "content": res.text.strip()}],
                    id=f"self-instruct-{n:05d}", source=f"synth:self_instruct:{teacher.name}",
                    meta={"pipeline": "self_instruct", "step": step, "teacher": teacher.name,
                          "prompt_hash": phash, "seed": cfg.seed},
                )
                out.append(conv)
                generated.append(task)
                n += 1
                report.rows_new += 1
            print(f"self_instruct step {step}: {len(accepted)} new instructions, {n}/{sc.num_instructions} rows, "
                  f"{time.monotonic() - t_step:.0f} s", file=sys.stderr, flush=True)  # a step of a local teacher takes minutes
            step += 1
            state.data["step"] = step
            state.save_progress(teacher)
    finally:
        out.close()
        state.save_progress(teacher)
        report.fill(n, state, teacher)
    return report

