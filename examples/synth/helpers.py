"""Two small steps of examples/synth/run.sh.

    python examples/synth/helpers.py overlap runs/synth/raw.jsonl examples/synth/judge_prompts.jsonl
        How close each held-out judge prompt is to the synthetic instructions: the ROUGE-L novelty
        test Self-Instruct itself uses (> 0.7 = the same task) and sftlab's 8-gram decontamination.
    python examples/synth/helpers.py mismatch examples/synth/judge_references.jsonl runs/synth/calib_mismatched.jsonl
        Each prompt paired with the reference answer of the NEXT prompt: an off-topic answer that
        any useful judge must rank below the on-topic reference (the judge's calibration check).
"""

import json
import sys

from sftlab.data import load_conversations


def overlap(synth_path: str, prompts_path: str) -> None:
    from sftlab.evaluate.decontam import decontaminate
    from sftlab.synth.filters import NoveltyFilter

    train = load_conversations(synth_path).conversations
    prompts = load_conversations(prompts_path, require_response=False).conversations
    pool = NoveltyFilter([c.messages[0].content for c in train], threshold=0.7)
    scores = [(pool.most_similar(p.messages[0].content), p) for p in prompts]
    same = [(s, who, p) for (s, who), p in scores if s > 0.7]
    print(f"held-out prompts {len(prompts)} vs {len(train)} synthetic instructions: max ROUGE-L "
          f"{max(s for (s, _), _ in scores):.2f}, median {sorted(s for (s, _), _ in scores)[len(scores) // 2]:.2f}; "
          f"{len(same)} above 0.7")
    for s, who, p in same:
        print(f"  {p.id} ({s:.2f}): {p.messages[0].content!r} ~ {who!r}")
    rep = decontaminate(train, [(p.id, prompts_path, p) for p in prompts], n=8)
    print(rep.summary())


def mismatch(refs_path: str, out_path: str) -> None:
    refs = load_conversations(refs_path).conversations
    with open(out_path, "w") as f:
        for i, c in enumerate(refs):
            other = refs[(i + 1) % len(refs)].last_response
            msgs = [m.to_dict() for m in c.prompt_messages] + [{"role": "assistant", "content": other}]
            f.write(json.dumps({"id": c.id, "messages": msgs}, ensure_ascii=False) + "\n")
    print(f"{len(refs)} mismatched answers written to {out_path}")


if __name__ == "__main__":
    {"overlap": overlap, "mismatch": mismatch}[sys.argv[1]](*sys.argv[2:])
