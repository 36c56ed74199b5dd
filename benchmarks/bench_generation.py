"""Batched vs one-at-a-time generation throughput (new tokens/s), side by side in one run.

    python benchmarks/bench_generation.py                              # tiny model from config, seconds
    python benchmarks/bench_generation.py --model smollm2-135m-instruct

Both modes answer the same prompts greedily with sftlab.generate.generate_batch (batch_size=N vs
batch_size=1); new tokens are counted from the answers' token ids (up to the stop token), so a
batch that pads short answers is not credited with the padding. Answers are compared too:
greedy batched and one-by-one answers should agree (left padding is masked).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

PROMPTS = [
    "Reverse the word apple.",
    "What is 12 + 30? Answer with the number.",
    "Write one sentence about the sea.",
    "List three colours, separated by commas.",
    "Translate 'good morning' into French.",
    "Give a synonym for 'happy'.",
    "Sort these words: pear, apple, fig.",
    "Name a planet in the solar system.",
    "Write the word 'cat' in capital letters.",
    "What is the opposite of 'cold'?",
    "Summarise in five words: the quick brown fox jumps over the lazy dog.",
    "Count the letters in 'banana'.",
    "Is 17 a prime number? Answer yes or no.",
    "Say hello in Spanish.",
    "What colour is the sky on a clear day?",
    "Write a short greeting for a birthday card.",
]


def tiny():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from tiny import make_model, make_tokenizer

    return make_model(layers=4, hidden=128), make_tokenizer()


def run_mode(model, renderer, prompts, params, batch_size):
    from sftlab.generate import generate_batch

    t0 = time.perf_counter()
    answers = generate_batch(model, renderer, prompts, params, batch_size=batch_size, progress=False)
    secs = time.perf_counter() - t0
    tok = renderer.tokenizer
    # tokens generated = answer tokens + the stop token where the answer ended before the limit
    new = sum(min(params.max_new_tokens, len(tok(a, add_special_tokens=False)["input_ids"]) + 1) for a in answers)
    return answers, new, secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model name/path (default: a tiny 4-layer Llama built from config)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    from sftlab.generate import SamplingParams
    from sftlab.render import Renderer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from sftlab.model import load_model, load_tokenizer

        model, tok = load_model(args.model), load_tokenizer(args.model)
        label = args.model
    else:
        model, tok = tiny()
        label = "tiny Llama (4 layers, hidden 128, built from config)"
    model.eval()
    renderer = Renderer(tok)
    prompts = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    run_mode(model, renderer, prompts[:2], SamplingParams(max_new_tokens=2), 2)  # warm-up (allocations, kernels)

    batched, n_b, s_b = run_mode(model, renderer, prompts, params, args.batch_size)
    single, n_s, s_s = run_mode(model, renderer, prompts, params, 1)
    same = sum(a == b for a, b in zip(batched, single))
    print(f"model: {label}; {len(prompts)} prompts, greedy, max_new_tokens={params.max_new_tokens}, torch threads={torch.get_num_threads()}")
    print(f"{'mode':<22}{'new tokens':>12}{'seconds':>10}{'tokens/s':>11}")
    print(f"{'batched (bs=' + str(args.batch_size) + ')':<22}{n_b:>12}{s_b:>10.2f}{n_b / s_b:>11.1f}")
    print(f"{'one at a time (bs=1)':<22}{n_s:>12}{s_s:>10.2f}{n_s / s_s:>11.1f}")
    print(f"speed-up batched / one-at-a-time: {(n_b / s_b) / (n_s / s_s):.2f}x")
    print(f"identical answers: {same} of {len(prompts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
