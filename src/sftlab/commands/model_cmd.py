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
    p.add_argument("--allow-local-images", action="store_true",
                   help="vision-language models: accept local paths and file:// URLs as image_url (default: data: URLs only)")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="vision-language models: fetch http(s) image_url URLs (default: refused with 400)")
    p.add_argument("--max-images", type=int, default=8, help="images one request may carry (default 8)")
    p.set_defaults(func=run_serve)

    c = sub.add_parser("chat", help="chat with a model in the terminal (streaming), or answer one --prompt")
    c.add_argument("model")
    c.add_argument("--prompt", default=None, help="answer this one message, print it and exit (for scripts)")
    c.add_argument("--system", default=None, help="system message")
    c.add_argument("--max-tokens", type=int, default=512)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--image", action="append", default=None, metavar="PATH",
                   help="vision-language models: an image for the first message (repeatable); "
                        "in the chat, `/image PATH` attaches one to your next message")
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
          max_waiting=args.max_waiting, queue_timeout_s=args.queue_timeout, allow_local_images=args.allow_local_images,
          allow_remote_images=args.allow_remote_images, max_images=args.max_images)
    return 0


def _chat_image(path: str) -> str:
    """A `--image` / `/image` argument -> an image reference that opens (SftlabError otherwise)."""
    from pathlib import Path

    from sftlab.multimodal.images import check_image, resolve_image_ref

    ref = resolve_image_ref(path, Path.cwd())
    problem = check_image(ref)
    if problem:
        from sftlab.errors import SftlabError

        raise SftlabError(f"cannot use image {path}: {problem}")
    return ref


def run_chat(args, stdin=None, stdout=None) -> int:
    from sftlab.conversation import IMAGE_PLACEHOLDER
    from sftlab.errors import SftlabError
    from sftlab.generate import SamplingParams, stream_answer
    from sftlab.render import Renderer

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    from sftlab.multimodal.use import is_vlm

    vision = None
    if is_vlm(args.model):
        from sftlab.multimodal.use import load_vlm_model
        from sftlab.multimodal.vision import VisionInputs

        model, processor = load_vlm_model(args.model, merge_adapter=True)
        tok, vision = processor.tokenizer, VisionInputs(processor)
    else:
        from sftlab.model import load_model, load_tokenizer

        tok = load_tokenizer(args.model)
        model = load_model(args.model, merge_adapter=True)  # chat only: LoRA folded in, faster decoding
    model.eval()
    pending = list(getattr(args, "image", None) or [])  # images for the next user message
    if pending and vision is None:
        raise SftlabError(f"--image needs a vision-language model; {args.model} is a text-only model")
    pending = [_chat_image(p) for p in pending]
    rd = Renderer(tok)  # the model's own (trained) chat template
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    start = [{"role": "system", "content": args.system}] if args.system else []
    images: list[str] = []  # the images of the history, in the order of their placeholders

    def user(text: str) -> dict:
        """A user message with the pending images (LLaVA's layout: `<image>` lines before the text)."""
        images.extend(pending)
        content = "".join(IMAGE_PLACEHOLDER + "\n" for _ in pending) + text
        pending.clear()
        return {"role": "user", "content": content}

    def answer(history: list[dict]) -> str:
        pieces = []
        try:
            stream = stream_answer(model, rd, history, params, images=tuple(images), vision=vision) if vision is not None \
                else stream_answer(model, rd, history, params)
        except ValueError as e:  # e.g. a typed `<image>` with no image attached
            raise SftlabError(f"cannot build the prompt: {e}") from None
        for piece in stream:
            if not pieces:
                piece = piece.lstrip()
            pieces.append(piece)
            stdout.write(piece)
            stdout.flush()
        stdout.write("\n")
        return "".join(pieces).strip()

    if args.prompt is not None:
        answer(start + [user(args.prompt)])
        return 0

    history = list(start)
    stdout.write("chat with {} -- /reset clears the history, {}/exit quits\n".format(
        args.model, "/image PATH attaches an image to your next message, " if vision is not None else ""))
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
            images.clear()
            pending.clear()
            stdout.write("(history cleared)\n")
            continue
        if text.startswith("/image"):
            path = text[len("/image"):].strip()
            if vision is None:
                stdout.write("(this is a text-only model: it cannot read images)\n")
            elif not path:
                stdout.write("(usage: /image PATH)\n")
            else:
                try:
                    pending.append(_chat_image(path))
                    stdout.write(f"(image attached to your next message: {path})\n")
                except SftlabError as e:
                    stdout.write(f"({e})\n")
            continue
        if not text:
            continue
        n_images = len(images)
        history.append(user(text))
        stdout.write("assistant> ")
        try:
            history.append({"role": "assistant", "content": answer(history)})
        except SftlabError as e:
            history.pop()
            del images[n_images:]
            stdout.write(f"({e})\n")


def run_export(args) -> int:
    from pathlib import Path

    from sftlab.model import load_model, load_tokenizer, merge_and_save, save_model
    from sftlab.multimodal.use import is_vlm

    if args.merge:
        out = merge_and_save(args.adapter, Path(args.out), dtype=args.dtype)
    elif is_vlm(args.adapter):  # the model (or adapter) as it is, with its processor files
        from sftlab.multimodal.use import load_vlm_model

        model, processor = load_vlm_model(args.adapter, dtype=args.dtype)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)
    else:
        out = Path(args.out)
        save_model(load_model(args.adapter, dtype=args.dtype), load_tokenizer(args.adapter), out)
    print(f"saved to {out}")
    return 0
