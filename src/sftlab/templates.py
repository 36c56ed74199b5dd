"""Named chat templates for base models that ship without one.

Each is a plain Jinja string in the transformers `apply_chat_template` dialect. Every template
ends an assistant turn with a special stop token, because that token is what we train the model to
emit at the end of an answer; `render.py` refuses templates that don't.
"""

from __future__ import annotations

from sftlab.errors import TemplateError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Alpaca has no multi-turn form of its own; turns are laid out one after another, and each
# response is closed with the tokenizer's eos token (the only special token a base model knows).
ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '### Input:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "alpaca": ALPACA}

# Special tokens each template needs the tokenizer to have as single tokens.
TEMPLATE_SPECIAL_TOKENS: dict[str, list[str]] = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "alpaca": [],
}


def apply_template(tokenizer, name: str | None, *, add_missing_tokens: bool = False) -> list[str]:
    """Give `tokenizer` the named built-in template (or keep its own when `name` is None/"auto").

    Returns the special tokens that were added to the vocabulary (the model's embeddings must then
    be resized). Without `add_missing_tokens`, a missing token is an error that says how to fix it.
    """
    if name in (None, "auto", "tokenizer"):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "the tokenizer has no chat template. Set `template:` to one of "
                f"{sorted(BUILTIN_TEMPLATES)} (base models usually want 'chatml' or 'alpaca')."
            )
        return []
    if name not in BUILTIN_TEMPLATES:
        raise TemplateError(f"unknown template {name!r}; choose one of {sorted(BUILTIN_TEMPLATES)} or 'auto'")
    vocab = tokenizer.get_vocab()
    missing = [t for t in TEMPLATE_SPECIAL_TOKENS[name] if t not in vocab]
    if missing and not add_missing_tokens:
        raise TemplateError(
            f"template {name!r} needs special tokens {missing} that the tokenizer lacks. "
            "Set `add_special_tokens: true` in the model config to add them (the embeddings are "
            "resized and the new rows trained), or pick a template whose tokens exist."
        )
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if name == "alpaca" and tokenizer.eos_token is None:
        raise TemplateError("template 'alpaca' ends responses with eos_token, but the tokenizer has none")
    tokenizer.chat_template = BUILTIN_TEMPLATES[name]
    return missing
