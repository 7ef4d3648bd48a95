"""CheapDropout: fit's CPU dropout (16-bit draws instead of a float per element) keeps the Bernoulli(1 - p)
statistics, the expected activation and determinism under a seed, and leaves eval and the weights alone."""

import torch
from torch import nn

from tunesmith.training.dropout import CheapDropout, keep_scaled, use_cheap_dropout


def test_mask_keeps_one_minus_p_and_the_expected_activation():
    torch.manual_seed(0)
    for p in (0.1, 0.3, 0.5):
        m = keep_scaled(torch.Size([500, 1000]), p, torch.float32)
        scale = 1 / (1 - round(p * 65536) / 65536)
        assert set(m.unique().tolist()) <= {0.0, torch.tensor(scale).item()}
        assert abs((m > 0).float().mean().item() - (1 - p)) < 0.003  # 500k draws: ~5 standard errors
        assert abs(m.mean().item() - 1.0) < 0.005
    # every 16-bit quarter of each 64-bit draw is used evenly (a biased sign bit would keep one in four more)
    q = (keep_scaled(torch.Size([400_000]), 0.5, torch.float32) > 0).float().view(-1, 4).mean(0)
    assert (q - 0.5).abs().max().item() < 0.01
    assert keep_scaled(torch.Size([7, 3]), 0.2, torch.bfloat16).dtype == torch.bfloat16


def test_deterministic_under_a_seed_gradient_is_the_mask_and_eval_is_the_identity():
    d = CheapDropout(0.25)
    x = torch.randn(64, 32)
    torch.manual_seed(5)
    a = d(x)
    torch.manual_seed(5)
    assert torch.equal(d(x), a)
    assert not torch.equal(d(x), a)  # the generator moved on
    leaf = x.clone().requires_grad_(True)
    torch.manual_seed(5)
    d(leaf).sum().backward()
    torch.manual_seed(5)
    assert torch.equal(leaf.grad, d(torch.ones_like(x)))
    d.eval()
    assert torch.equal(d(x), x)


def test_swaps_plain_dropout_modules_only_and_keeps_the_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.3, inplace=True)), nn.ReLU())
    keys = list(model.state_dict())
    assert use_cheap_dropout(model) == 2
    assert isinstance(model[1], CheapDropout) and model[1].p == 0.1
    assert isinstance(model[2][0], CheapDropout) and model[2][0].inplace  # inplace: torch's own path runs
    assert list(model.state_dict()) == keys
    assert use_cheap_dropout(model) == 0  # already swapped
    x = torch.randn(8, 4)
    torch.manual_seed(1)
    y = model[2][0](x.clone())
    torch.manual_seed(1)
    assert torch.equal(y, nn.functional.dropout(x.clone(), 0.3, True, True))
