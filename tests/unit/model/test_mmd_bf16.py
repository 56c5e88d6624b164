"""Under bf16 autocast the MMD keeps its float32 value and gradient (it used to round to exactly 0).

The latents come out of a Linear layer run under CPU autocast, as they do in the model (bf16 tensors);
the reference is the same computation in float32 without autocast. Checked for the plain MMD and for
the row-share form (one rank: the columns are the rank's own rows) that DDP uses.
"""

from __future__ import annotations

import pytest
import torch

from cmmd_dist.model.mmd import gaussian_kernel, mmd, row_share_mmd


def latents(autocast: bool):
    """(zq, zp, the layer's weight): two nearby sets of 256 latents (D = 16), the MMD of order 1e-3."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(512, 8)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        z = layer(x)
        zq, zp = z[:256], z[256:] + 0.15
    return zq, zp, layer.weight


def value_and_grad(form: str, autocast: bool):
    zq, zp, weight = latents(autocast)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        if form == "plain":
            value = mmd(zq, zp)
        else:
            value = row_share_mmd(zq, zp, torch.cat([zq, zp]).detach(), world=1)
    (grad,) = torch.autograd.grad(value, weight)
    return value.detach(), grad


@pytest.mark.parametrize("form", ["plain", "row_share"])
def test_bf16_mmd_matches_fp32(form):
    ref, ref_grad = value_and_grad(form, autocast=False)
    val, grad = value_and_grad(form, autocast=True)
    assert float(ref) > 1e-4  # the regime where bf16 rounded the MMD to 0
    assert float(val) != 0.0
    assert float(val) == pytest.approx(float(ref), rel=0.01)
    assert val.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(grad.flatten(), ref_grad.flatten(), dim=0)
    assert float(cos) > 0.99
    assert float(grad.norm()) == pytest.approx(float(ref_grad.norm()), rel=0.05)


def test_kernel_is_float32_under_autocast():
    a = torch.randn(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gaussian_kernel(a, a).dtype == torch.float32
        assert gaussian_kernel(a.bfloat16(), a.bfloat16()).dtype == torch.float32
