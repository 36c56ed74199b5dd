"""`sftlab serve`, `sftlab chat`, `sftlab export`: using a (tuned) model."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible chat server (/v1/chat/completions, /v1/models)")
    p.add_argument("model", help="model folder, adapter folder, .gguf, hub id or smollm2-135m-instruct")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 = any free port (printed at start)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument("--max-tokens", type=int, default=512,
                   help="answer length when a request gives no max_tokens (default 512; always within the context)")
    p.add_argument("--max-waiting", type=int, default=16,
                   help="requests that may wait while one generates; more get 503 busy (default 16)")
    p.add_argument("--queue-timeout", type=float, default=120.0,
                   help="seconds a request may wait for its turn before 503 busy (default 120)")
    p.set_defaults(func=run_serve)

    c = sub.add_parser("chat", help="chat with a model in the terminal (streaming), or answer one --prompt")
    c.add_argument("model")
    c.add_argument("--prompt", default=None, help="answer this one message, print it and exit (for scripts)")
    c.add_argument("--system", default=None, help="system message")
    c.add_argument("--max-tokens", type=int, default=512)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=run_chat)

    e = sub.add_parser("export", help="save a model; --merge folds a LoRA adapter into its base")
    e.add_argument("adapter", help="adapter folder (or model) to export")
    e.add_argument("--merge", action="store_true", help="merge the LoRA weights into the base model")
    e.add_argument("--out", required=True, help="output folder (safetensors + tokenizer + chat template)")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    e.set_defaults(func=run_export)


def run_serve(args) -> int:
    from sftlab.serve import serve

    serve(args.model, host=args.host, port=args.port, api_key=args.api_key, default_max_tokens=args.max_tokens,
          max_waiting=args.max_waiting, queue_timeout_s=args.queue_timeout)
    return 0


def run_chat(args, stdin=None, stdout=None) -> int:
    from sftlab.generate import SamplingParams, stream_answer
    from sftlab.model import load_model, load_tokenizer
    from sftlab.render import Renderer

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    tok = load_tokenizer(args.model)
    model = load_model(args.model)
    model.eval()
    rd = Renderer(tok)  # the model's own (trained) chat template
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    start = [{"role": "system", "content": args.system}] if args.system else []

    def answer(history: list[dict]) -> str:
        pieces = []
        for piece in stream_answer(model, rd, history, params):
            if not pieces:
                piece = piece.lstrip()
            pieces.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        return "".join(pieces).strip()

    if args.prompt is not None:
        answer(start + [{"role": "user", "content": args.prompt}])
        return 0

    history = list(start)
    stdout.write("chat with {} -- /reset clears the history, /exit quits\n".format(args.model))
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return 0
        text = line.strip()
        if text == "/exit":
            return 0
        if text == "/reset":
            history = list(start)
            stdout.write("(history cleared)\n")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        stdout.write("assistant> ")
        history.append({"role": "assistant", "content": answer(history)})


def run_export(args) -> int:
    from pathlib import Path

    from sftlab.model import load_model, load_tokenizer, merge_and_save, save_model

    if args.merge:
        out = merge_and_save(args.adapter, Path(args.out), dtype=args.dtype)
    else:
        out = Path(args.out)
        save_model(load_model(args.adapter, dtype=args.dtype), load_tokenizer(args.adapter), out)
    print(f"saved to {out}")
    return 0
