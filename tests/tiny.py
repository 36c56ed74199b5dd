"""Tiny tokenizer and model built locally for tests: no hub, a few ms to build."""

from __future__ import annotations

import functools

from sftlab.templates import CHATML

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Reverse the word apple. Answer: elppa",
    "What is 2 + 3? The answer is 5.",
    "Hello there! How are you today? I am fine, thank you.",
    "Sort these numbers: 3, 1, 2 -> 1, 2, 3",
    "system user assistant tool instruction response input output",
] * 20


@functools.lru_cache(maxsize=None)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def make_tokenizer(template: str | None = CHATML):
    """A byte-level BPE tokenizer (any text encodes) with ChatML special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if template:
        tok.chat_template = template
    return tok


def make_model(vocab_size: int = 400, seed: int = 0, attn: str = "sdpa", layers: int = 2, hidden: int = 64):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def hook_training_forwards(model, action):
    """Call `action(output, k)` on the k-th training-mode forward of `model` (eval forwards are not
    counted); a non-None return replaces the output. Returns the hook handle."""
    calls = [0]

    def hook(module, args, output):
        if not module.training:
            return None
        calls[0] += 1
        return action(output, calls[0])

    return model.register_forward_hook(hook)
