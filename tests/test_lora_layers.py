"""lora.layers: LoRA in some decoder layers only; with nothing trainable below them, the backward stops there."""

import pytest

from sftlab.config import load_config
from sftlab.errors import ConfigError
from sftlab.model import add_lora
from sftlab.train import setup_data, setup_model
from test_multimodal_train import mm_run  # noqa: F401 - the fixture
from tiny import make_model


def _lora_layers(model) -> set[int]:
    import re

    return {int(re.search(r"\.layers\.(\d+)\.", n).group(1)) for n, _ in model.named_parameters() if "lora_" in n}


def test_text_model_gets_lora_only_in_the_named_layers():
    model = add_lora(make_model(layers=4), 4, 8, 0.0, "all-linear", layers=[2, 3])
    assert _lora_layers(model) == {2, 3}
    assert _lora_layers(add_lora(make_model(layers=4), 4, 8, 0.0, "all-linear")) == {0, 1, 2, 3}
    with pytest.raises(ConfigError, match=r"lora.layers \[4\]: the model has 4 decoder layers, numbered 0 to 3"):
        add_lora(make_model(layers=4), 4, 8, 0.0, "all-linear", layers=[1, 4])


def _vlm(mm_run, **overrides):
    cfg, _ = mm_run
    cfg = {**cfg, "lora": {"enabled": True, "r": 4, "alpha": 8, **overrides.get("lora", {})},
           "multimodal": {**cfg["multimodal"], **overrides.get("multimodal", {})}}
    rc = load_config(cfg)
    tokenizer, processor, added, data = setup_data(rc, None)
    return setup_model(rc, None, tokenizer, added, processor), data


def test_vlm_top_layer_lora_with_a_frozen_projector_stops_the_backward_below_it(mm_run):  # noqa: F811
    model, data = _vlm(mm_run, lora={"layers": [1]}, multimodal={"trainable": ["language_model"]})
    assert _lora_layers(model) == {1}
    assert not any(p.requires_grad for n, p in model.named_parameters() if "multi_modal_projector" in n)
    # an independent look at autograd: what each decoder layer outputs, and whether a backward reaches it
    layers = model.get_base_model().model.language_model.layers
    needs_grad = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: needs_grad.__setitem__(k, (o[0] if isinstance(o, tuple) else o).requires_grad))
             for k, layer in enumerate(layers)]
    batch = data.train.batch(0)
    model(**batch.model_inputs()).logits.sum().backward()
    for h in hooks:
        h.remove()
    assert needs_grad == {0: False, 1: True}
    # the default (projector trains, LoRA everywhere) needs the backward through every layer
    model, data = _vlm(mm_run, multimodal={"trainable": ["projector", "language_model"]})
    assert _lora_layers(model) == {0, 1}


def test_vlm_lora_layers_out_of_range_is_a_config_error(mm_run):  # noqa: F811
    with pytest.raises(ConfigError, match=r"lora.layers \[2, 7\]: the model has 2 decoder layers"):
        _vlm(mm_run, lora={"layers": [0, 2, 7]}, multimodal={"trainable": ["language_model"]})
