"""LLaVA-style training on tiny models: masks, expansion, packing, loss, stages, saved models.

Every check compares with a computation that does not go through sftlab's render/pack/loss: the
processor's own chat template + expansion, a per-example forward, plain transformers loading."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import make_model_folder
from sftlab.config import load_config
from sftlab.loss import summed_loss
from sftlab.pack import PackedDataset, apply_length_policy
from sftlab.train import setup_data, setup_model, train

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (40, 60, 220), "yellow": (230, 210, 30)}


def write_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rgb in COLOURS.items():
        im = Image.new("RGB", (32, 32), (255, 255, 255))
        im.paste(rgb, (4, 4, 28, 28))
        paths[name] = folder / f"{name}.png"
        im.save(paths[name])
    return paths


def rows(paths, n=16):
    names = list(paths)
    out = []
    for i in range(n):
        a, b = names[i % 4], names[(i + 1) % 4]
        if i % 3 == 0:  # two images in one conversation, one of them in a second user turn
            msgs = [{"role": "user", "content": "<image>\nColour?"}, {"role": "assistant", "content": a},
                    {"role": "user", "content": "And this one? <image>"}, {"role": "assistant", "content": b}]
            out.append({"messages": msgs, "images": [str(paths[a]), str(paths[b])]})
        else:
            out.append({"messages": [{"role": "user", "content": "<image>\nWhat colour is it?"},
                                     {"role": "assistant", "content": f"It is {a}."}], "images": [str(paths[a])]})
    return out


@pytest.fixture
def mm_run(tmp_path):
    paths = write_images(tmp_path / "img")
    data = tmp_path / "mm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(paths)))
    cfg = {
        "model": {"name": str(make_model_folder(tmp_path))},
        "lora": {"enabled": False},
        "multimodal": {"vision_encoder": "builtin:tiny-siglip", "image_size": 32, "patch_size": 16, "trainable": ["projector"]},
        "data": {"train": [{"path": str(data)}], "max_len": 128, "cache": False},
        "train": {"output_dir": str(tmp_path / "stage1"), "lr": 1e-2, "max_steps": 3, "tokens_per_batch": 128,
                  "warmup_ratio": 0.0, "save_every": 0},
    }
    return cfg, paths


def test_expanded_ids_and_trained_positions_match_the_processor(mm_run):
    """Our ids == the processor's own chat template + image expansion; trained = exactly each answer + its stop token."""
    cfg, paths = mm_run
    tokenizer, processor, _, data = setup_data(load_config(cfg), None)
    assert processor is not None and data.train.vision is not None
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    from sftlab.data.load import load_conversations

    convs = load_conversations(cfg["data"]["train"][0]["path"]).conversations
    by_id = {r.id: r for r in data.train.examples}
    for conv in convs:
        r = by_id[conv.id]
        msgs = conv.to_dicts()
        images = [Image.open(p).convert("RGB") for p in conv.images]
        text = processor.apply_chat_template(msgs, tokenize=False)
        ref = processor(text=text, images=images, return_tensors="pt")["input_ids"][0].tolist()
        assert r.input_ids == ref
        assert r.input_ids.count(image_id) == 4 * len(conv.images)  # (32 / 16)^2 tokens per image
        # independent mask: each assistant turn i spans [len(prompt up to it), len(prompt + answer + stop))
        expected = [0] * len(ref)
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            n_imgs = sum(x["content"].count("<image>") for x in msgs[:i])
            before = processor(text=processor.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True),
                               images=images[:n_imgs] or None, return_tensors="pt")["input_ids"][0]
            answer = tokenizer(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
            assert ref[len(before): len(before) + len(answer)] == answer
            expected[len(before): len(before) + len(answer)] = [1] * len(answer)
        assert r.loss_mask == expected
        assert not any(m for t, m in zip(r.input_ids, r.loss_mask) if t == image_id)
        assert [ref[a:b] for a, b in r.image_spans] == [[image_id] * 4] * len(conv.images)


def test_plain_text_rows_with_an_image_train_the_caption_and_eos_only(mm_run, tmp_path):
    """LLaVA's plain stage-1 rows ({"text": "<image>caption", "image": ...}, no template): ids == the
    processor's own expansion of the text + eos; trained = exactly the caption tokens + eos."""
    cfg, paths = mm_run
    plain = tmp_path / "plain.jsonl"
    captions = {name: f"A {name} square." for name in paths}
    plain.write_text("".join(json.dumps({"text": f"<image>{c}", "image": str(paths[n])}) + "\n" for n, c in captions.items()))
    cfg["data"]["train"] = [{"path": str(plain)}]
    tokenizer, processor, _, data = setup_data(load_config(cfg), None)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    caption_of = {str(paths[n]): c for n, c in captions.items()}
    assert sorted(r.images[0] for r in data.train.examples) == sorted(caption_of)  # each row once, with its image
    for r in data.train.examples:
        caption = caption_of[r.images[0]]
        assert r.kind == "text" and len(r.images) == 1
        ref = processor(text=f"<image>{caption}", images=[Image.open(r.images[0]).convert("RGB")],
                        return_tensors="pt")["input_ids"][0].tolist() + [tokenizer.eos_token_id]
        assert r.input_ids == ref and ref[:4] == [image_id] * 4
        answer = tokenizer(caption, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert [t for t, m in zip(r.input_ids, r.loss_mask) if m] == answer
        assert r.loss_mask == [0] * 4 + [1] * len(answer)


def test_packed_and_padded_loss_equal_one_example_at_a_time(mm_run):
    cfg, _ = mm_run
    rc = load_config(cfg)
    tokenizer, processor, added, data = setup_data(rc, None)
    torch.manual_seed(0)
    model = setup_model(rc, None, tokenizer, added, processor)
    for p in model.parameters():  # a projector that is not ~0 so image features matter
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    model.eval()
    exs = data.train.examples[:6]
    packed = PackedDataset(exs, 10_000, vision=data.train.vision)
    padded = PackedDataset(exs, 10_000, padded=True, batch_size=6, pad_id=tokenizer.pad_token_id, vision=data.train.vision)
    assert len(packed) == 1 and len(padded) == 1
    assert packed.batch(0).extra["pixel_values"].shape[0] == sum(len(r.images) for r in exs)
    with torch.no_grad():
        one_by_one, n_ref = 0.0, 0
        for r in exs:  # plain forward per example: the processor's pixel inputs, full logits, textbook CE
            px = processor.image_processor(images=[Image.open(p).convert("RGB") for p in r.images], return_tensors="pt")["pixel_values"]
            ids = torch.tensor([r.input_ids])
            logits = model(input_ids=ids, pixel_values=px).logits[0, :-1]
            tgt = torch.tensor(r.input_ids[1:])
            keep = torch.tensor(r.loss_mask[1:]).bool()
            one_by_one += F.cross_entropy(logits[keep], tgt[keep], reduction="sum").item()
            n_ref += int(keep.sum())
        for ds in (packed, padded):
            loss, n = summed_loss(model, ds.batch(0))
            assert n == n_ref
            assert loss.item() == pytest.approx(one_by_one, rel=1e-4)
    # and the images matter: the same rows with each image swapped for another give another loss
    swapped = [r.__class__(r.input_ids, r.loss_mask, r.turn_ends, r.id, r.source, r.kind, tuple(reversed(r.images)) if len(r.images) > 1
                           else (exs[(i + 1) % 6].images[0],), r.image_spans) for i, r in enumerate(exs)]
    with torch.no_grad():
        other, _ = summed_loss(model, PackedDataset(swapped, 10_000, vision=data.train.vision).batch(0))
    assert abs(other.item() - one_by_one) > 1e-3


def test_stage1_changes_only_the_projector_then_stage2_lora_loads_in_plain_transformers(mm_run, tmp_path):
    cfg, paths = mm_run
    result = train(load_config(cfg))
    stage1 = result.final_dir
    assert (stage1 / "processor_config.json").is_file() or (stage1 / "preprocessor_config.json").is_file()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    tuned = AutoModelForImageTextToText.from_pretrained(stage1)
    # the same assembly, untrained: rebuilt from the config (seeded) — every non-projector weight is bit-identical
    rc = load_config(cfg)
    tokenizer, processor, added, _ = setup_data(rc, None)
    fresh = setup_model(rc, None, tokenizer, added, processor)
    changed, same = [], []
    fresh_state = fresh.state_dict()
    for name, w in tuned.state_dict().items():
        (same if torch.equal(w, fresh_state[name]) else changed).append(name)
    assert changed and all("multi_modal_projector" in n for n in changed)
    assert any("multi_modal_projector" in n for n in changed)
    assert any("vision_tower" in n for n in same) and any("language_model" in n for n in same)

    # stage 2: LoRA on the language model + the projector, from stage 1's folder
    cfg2 = {**cfg, "model": {"name": str(stage1)}, "lora": {"enabled": True, "r": 4, "alpha": 8},
            "multimodal": {"trainable": ["projector", "language_model"]},
            "train": {**cfg["train"], "output_dir": str(tmp_path / "stage2"), "lr": 5e-3}}
    stage2 = train(load_config(cfg2)).final_dir
    adapter = json.loads((stage2 / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(stage1)
    assert "multi_modal_projector" in adapter["modules_to_save"]
    assert all("vision_tower" not in t for t in [adapter["target_modules"]] if isinstance(t, str))
    from peft import PeftModel

    proc = AutoProcessor.from_pretrained(stage2)
    base = AutoModelForImageTextToText.from_pretrained(stage1)
    model = PeftModel.from_pretrained(base, stage2)
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names and all("language_model" in n for n in lora_names)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    inputs = proc(text=proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                  images=[Image.open(paths["red"]).convert("RGB")], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_text_only_model_refuses_image_rows_with_the_fix(mm_run):
    cfg, _ = mm_run
    from sftlab.errors import DataError

    text_cfg = {k: v for k, v in cfg.items() if k != "multimodal"}
    with pytest.raises(DataError, match="multimodal.vision_encoder"):
        setup_data(load_config(text_cfg), None)


def test_length_policy_never_cuts_through_an_image(mm_run):
    cfg, _ = mm_run
    _, _, _, data = setup_data(load_config(cfg), None)
    r = next(r for r in data.train.examples if len(r.images) == 2)
    first_end, second_end = r.image_spans[0][1], r.image_spans[1][1]
    for policy in ("truncate", "split"):
        # a cut inside the second image: the whole example is dropped, counted
        kept, rep = apply_length_policy([r], second_end - 2, policy)
        assert kept == [] and rep.dropped_image_cut == 1
        # a cut after both images: the first max_len tokens, both images kept
        if len(r) > second_end + 1:
            kept, rep = apply_length_policy([r], second_end + 1, policy)
            assert len(kept) == 1 and kept[0].images == r.images and len(kept[0]) == second_end + 1
    assert first_end < second_end


@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_pretrained_encoder_folder_assembles_with_its_own_processor_and_token_count(tmp_path, kind):
    """The GPU configs' path (a CLIP/SigLIP encoder by hub id or folder), with a tiny encoder saved
    to a folder: its weights land in the vision tower unchanged; CLIP's CLS token is dropped
    (LLaVA's "default" feature strategy), so both give (image_size / patch)^2 image tokens."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, SiglipImageProcessor,
                              SiglipVisionConfig, SiglipVisionModel)

    from sftlab.multimodal.build import build_llava, make_processor, add_image_token
    from sftlab.model import load_model, load_tokenizer
    from sftlab.multimodal.vision import VisionInputs

    enc = tmp_path / f"tiny-{kind}"
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(3)
    if kind == "clip":
        CLIPVisionModel(CLIPVisionConfig(**small)).save_pretrained(enc)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(enc)
    else:
        SiglipVisionModel(SiglipVisionConfig(**small)).save_pretrained(enc)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(enc)
    lm_dir = make_model_folder(tmp_path)
    tok = load_tokenizer(str(lm_dir))
    add_image_token(tok)
    proc = make_processor(tok, str(enc), 999, 999)  # image_size/patch_size apply to the built-in tower only
    model = build_llava(load_model(str(lm_dir)), proc, encoder=str(enc), image_size=999, patch_size=999, feature_layer=-1, seed=0)
    cls = CLIPVisionModel if kind == "clip" else SiglipVisionModel
    saved = cls.from_pretrained(enc).state_dict()
    tower = model.model.vision_tower.state_dict()
    assert saved.keys() == tower.keys() and all(torch.equal(saved[k], tower[k]) for k in saved)
    assert model.config.vision_feature_select_strategy == ("default" if kind == "clip" else "full")
    im = Image.new("RGB", (50, 40), (10, 200, 30))
    assert VisionInputs(proc).tokens_for(im) == (32 // 8) ** 2
    ids = proc(text="<image>", images=[im], return_tensors="pt")
    with torch.no_grad():
        model(**ids)  # the features fit the token count (transformers raises on a mismatch)


def test_shipped_multimodal_configs_parse():
    from sftlab.configs import shipped_config, shipped_names

    names = [n for n in shipped_names() if "vlm" in n or "llava" in n]
    assert {"vlm-stage1", "vlm-stage2", "gpu-llava-stage1", "gpu-llava-stage2"} <= set(names)
    for n in names:
        cfg = load_config(shipped_config(n))
        assert cfg.multimodal is not None
    assert load_config(shipped_config("vlm-stage1")).multimodal.trainable == ["projector"]


def test_projector_lr_gives_the_projector_its_own_step_size(mm_run, tmp_path):
    """multimodal.projector_lr (LLaVA's mm_projector_lr): after one AdamW step from zero moments, each
    weight moves by lr * |g| / (|g| + eps) <= its group's lr, ~= lr where the gradient is not tiny.
    Checked on the saved weights against the seeded fresh assembly, not on the optimizer's groups."""
    from safetensors.torch import load_file

    cfg, _ = mm_run
    lr, projector_lr = 1e-4, 1e-2
    cfg = {**cfg, "lora": {"enabled": True, "r": 4, "alpha": 8},
           "multimodal": {**cfg["multimodal"], "trainable": ["projector", "language_model"], "projector_lr": projector_lr},
           "train": {**cfg["train"], "lr": lr, "max_steps": 1, "weight_decay": 0.0, "schedule": "constant"}}
    final = train(load_config(cfg)).final_dir
    saved = load_file(final / "adapter_model.safetensors")
    rc = load_config(cfg)
    tokenizer, processor, added, _ = setup_data(rc, None)
    fresh = setup_model(rc, None, tokenizer, added, processor).state_dict()

    def fresh_weight(key):  # adapter keys drop peft's "base_model.model." and the ".default" of the saved copy
        matches = [v for k, v in fresh.items() if "multi_modal_projector" in k and k.endswith(key.split("multi_modal_projector")[1])
                   and "original_module" not in k]
        return matches[0]

    proj = {k: v for k, v in saved.items() if "multi_modal_projector" in k}
    lora_b = {k: v for k, v in saved.items() if "lora_B" in k}
    assert proj and lora_b
    proj_step = max((v - fresh_weight(k)).abs().max().item() for k, v in proj.items())
    lora_step = max(v.abs().max().item() for v in lora_b.values())  # lora_B starts at 0
    assert 0.5 * projector_lr < proj_step <= projector_lr * 1.0001
    assert 0.5 * lr < lora_step <= lr * 1.0001
    # without it, the projector moves at train.lr
    cfg["multimodal"] = {**cfg["multimodal"], "projector_lr": None}
    cfg["train"] = {**cfg["train"], "output_dir": str(tmp_path / "same-lr")}
    saved = load_file(train(load_config(cfg)).final_dir / "adapter_model.safetensors")
    assert max((v - fresh_weight(k)).abs().max().item() for k, v in saved.items() if "multi_modal_projector" in k) <= lr * 1.0001
