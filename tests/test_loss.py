"""Loss at trained positions only equals the full-logits reference computation."""

import torch

from sftlab.loss import per_token_losses, summed_loss
from sftlab.pack import collate_packed, collate_padded
from helpers import random_rendered, reference_loss
from tiny import make_model


def test_summed_loss_matches_reference_packed_and_padded():
    model = make_model()
    exs = random_rendered(6, seed=4)
    with torch.no_grad():
        ref, n_ref = reference_loss(model, exs)
        for batch in (collate_packed(exs), collate_padded(exs, pad_id=0)):
            loss, n = summed_loss(model, batch)
            assert n == n_ref
            torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-5)
            per_tok = per_token_losses(model, batch)
            assert per_tok.numel() == n_ref
            torch.testing.assert_close(per_tok.sum(), ref, atol=1e-4, rtol=1e-5)


def test_the_plain_loss_and_eval_know_nothing_of_the_speed_paths():
    """The boundary of sftlab/speed/: the textbook loss and its users load none of it, and their
    functions take no speed switches (train.speed reaches them only through speed.enabled's loss)."""
    import inspect
    import subprocess
    import sys

    code = "import sys, sftlab.loss; print('SPEED', sorted(m for m in sys.modules if m.startswith('sftlab.speed')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "SPEED []" in out
    from sftlab.train import accumulate_gradients, evaluate_loss

    for fn in (summed_loss, per_token_losses, accumulate_gradients, evaluate_loss):
        params = set(inspect.signature(fn).parameters)
        assert not params & {"chunk_tokens", "per_example_attention", "use_blas", "speed"}, fn.__name__
