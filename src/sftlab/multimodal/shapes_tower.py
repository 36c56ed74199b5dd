"""`builtin:tiny-siglip-shapes`: the built-in SigLIP tower, pretrained here to see the built-in shapes.

A LLaVA needs an encoder that already sees: LLaVA starts from CLIP, pretrained on 400M image-text pairs,
and only aligns a projector to it. No pretrained vision weights can be downloaded on the machines this
runs on; with the randomly initialised frozen tower (`builtin:tiny-siglip`, the demo's default) "where is
the red square?" stayed at chance on every seed (its features do carry colour and shape: a nearest-class-
mean classifier on them names 97% of colours and 100% of shapes; docs/multimodal.md).
This tower is the stand-in for CLIP's pretraining, used with `sftlab quickstart --vision --vision-encoder
builtin:tiny-siglip-shapes`: the same 2-layer SigLIP tower, trained once before
any LLaVA is built to name, for every patch, the colour (6 + none) and the shape (3 + none) of the
object in the grid cell under the patch centre, and where the patch is (its index: a LLaVA reads the
image tokens as a sequence, and "where is the red square?" needs the place in the features — with
colour and shape heads only, position_of_object stayed at chance). It learns perception only — no question, caption or
answer text is involved — from scenes of the shapes suite's TRAIN split (suite seed 0), so no image
the demo evaluates on is ever seen. Its features are read at the layer the LLaVA reads
(multimodal.feature_layer), and the tower stays frozen in both stages as LLaVA's does.

~4,000 scenes x 4 epochs of a 1M-parameter tower: ~10-20 s on 2 CPU cores, once per (seed, size);
the weights are cached as safetensors in $SFTLAB_CACHE/towers (written atomically; a damaged file is
retrained). Per-patch accuracy on eval-split scenes is logged and kept in a JSON beside the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

VERSION = "v2"  # bump when the objective, data or recipe changes: the cache file name holds it
RECIPE = dict(n_scenes=4000, epochs=4, batch=64, lr=2e-3, weight_decay=0.01, n_eval_scenes=400)


def _labels(scene, n_side: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch (row-major, n_side x n_side): colour class (0 = none, 1..6) and shape class (0 = none, 1..3)
    of the object whose grid cell holds the patch centre."""
    from sftlab.builtin.shapes import COLOURS, SHAPES

    by_cell = {o.cell: o for o in scene.objects}
    colours, shapes = [], []
    for p in range(n_side * n_side):
        r, c = divmod(p, n_side)
        cy, cx = (2 * r + 1) * size // (2 * n_side), (2 * c + 1) * size // (2 * n_side)
        o = by_cell.get((cy * scene.grid // size) * scene.grid + cx * scene.grid // size)
        colours.append(0 if o is None else 1 + list(COLOURS).index(o.colour))
        shapes.append(0 if o is None else 1 + SHAPES.index(o.shape))
    return torch.tensor(colours), torch.tensor(shapes)


def _batch(scenes, processor, n_side: int, size: int):
    pixels = processor(images=[s.render() for s in scenes], return_tensors="pt")["pixel_values"]
    colours, shapes = zip(*(_labels(s, n_side, size) for s in scenes))
    return pixels, torch.stack(colours), torch.stack(shapes)


def _cache_file(config, seed: int, feature_layer: int) -> Path:
    from sftlab.model import cache_dir

    key = json.dumps({"v": VERSION, "recipe": RECIPE, "seed": seed, "layer": feature_layer,
                      "config": {k: getattr(config, k) for k in ("image_size", "patch_size", "hidden_size",
                                                                 "intermediate_size", "num_hidden_layers",
                                                                 "num_attention_heads")}}, sort_keys=True)
    return cache_dir() / "towers" / f"tiny-siglip-shapes-{VERSION}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.safetensors"


def pretrained_shapes_tower(config, *, seed: int, feature_layer: int = -1, log=print) -> dict:
    """The tower's state dict: from the cache, else pretrained now (and cached)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = _cache_file(config, seed, feature_layer)
    if path.exists():
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            log(f"{path}: unreadable ({e}); pretraining the tower again")
    state, _, metrics = pretrain(config, seed=seed, feature_layer=feature_layer, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(metrics, indent=2))
    return state


def pretrain(config, *, seed: int, feature_layer: int = -1, log=print) -> tuple[dict, torch.nn.ModuleDict, dict]:
    """Train a fresh (seeded) SigLIP tower with three per-patch linear heads (colour, shape, position) on train-split
    scenes; returns (tower state dict, the heads, metrics with eval-split per-patch accuracies)."""
    from transformers import SiglipVisionModel

    from sftlab.builtin.shapes import generate_scenes
    from sftlab.multimodal.build import BUILTIN_ENCODER, SHAPES_ENCODER, encoder_parts

    size, n_side = config.image_size, config.image_size // config.patch_size
    _, processor, _ = encoder_parts(BUILTIN_ENCODER, size, config.patch_size)  # the LLaVA's own image processor
    t0 = time.time()
    train_x, train_c, train_s = _batch(generate_scenes(RECIPE["n_scenes"], "train", seed=0, size=size), processor, n_side, size)
    eval_x, eval_c, eval_s = _batch(generate_scenes(RECIPE["n_eval_scenes"], "eval", seed=0, size=size), processor, n_side, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = SiglipVisionModel(config)
        heads = torch.nn.ModuleDict({"colour": torch.nn.Linear(config.hidden_size, 7),
                                     "shape": torch.nn.Linear(config.hidden_size, 4),
                                     "position": torch.nn.Linear(config.hidden_size, n_side * n_side)})
        where = torch.arange(n_side * n_side)
        order = torch.Generator().manual_seed(seed)
        params = list(tower.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"])
        steps = RECIPE["epochs"] * ((len(train_x) + RECIPE["batch"] - 1) // RECIPE["batch"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=RECIPE["lr"], total_steps=steps, pct_start=0.1)

        def logits(x):
            feats = tower(pixel_values=x, output_hidden_states=True).hidden_states[feature_layer]
            return heads["colour"](feats), heads["shape"](feats), heads["position"](feats)

        tower.train()
        for _ in range(RECIPE["epochs"]):
            perm = torch.randperm(len(train_x), generator=order)
            for i in range(0, len(perm), RECIPE["batch"]):
                idx = perm[i:i + RECIPE["batch"]]
                lc, ls, lp = logits(train_x[idx])
                loss = (torch.nn.functional.cross_entropy(lc.flatten(0, 1), train_c[idx].flatten())
                        + torch.nn.functional.cross_entropy(ls.flatten(0, 1), train_s[idx].flatten())
                        + torch.nn.functional.cross_entropy(lp.flatten(0, 1), where.repeat(len(idx))))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        tower.eval()
        with torch.no_grad():
            lc, ls, lp = logits(eval_x)
    occupied = eval_c > 0
    metrics = {"encoder": SHAPES_ENCODER, "version": VERSION, "seed": seed, "recipe": RECIPE,
               "feature_layer": feature_layer, "final_train_loss": round(loss.item(), 4),
               "eval_colour_accuracy": round((lc.argmax(-1) == eval_c).float().mean().item(), 4),
               "eval_shape_accuracy": round((ls.argmax(-1) == eval_s).float().mean().item(), 4),
               "eval_shape_accuracy_on_objects": round((ls.argmax(-1) == eval_s)[occupied].float().mean().item(), 4),
               "eval_position_accuracy": round((lp.argmax(-1) == where).float().mean().item(), 4),
               "seconds": round(time.time() - t0, 1)}
    log(f"pretrained {SHAPES_ENCODER} (seed {seed}) in {metrics['seconds']} s: per-patch accuracy on "
        f"eval-split scenes colour {metrics['eval_colour_accuracy']:.3f}, shape {metrics['eval_shape_accuracy']:.3f} "
        f"(on objects {metrics['eval_shape_accuracy_on_objects']:.3f}), position {metrics['eval_position_accuracy']:.3f}")
    return tower.state_dict(), heads, metrics
