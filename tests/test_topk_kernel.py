"""The top-k threshold kernel (attention/topk.py): exactly torch.topk's k-th largest, bounds checked."""

import numpy as np
import pytest
import torch

from anomaly_probe.attention import topk as topk_mod


def _rows(m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, m, generator=g)
    x[1] += torch.linspace(0, 6, m)  # rising toward recent keys (real attention)
    x[2, m // 3:] = float("-inf")  # masked keys
    x[3] = torch.randint(0, 3, (m,), generator=g).float()  # ties at the threshold
    x[4, ::2] = -0.0  # signed zeros
    x[5, : m // 2] = -1e30  # HIDDEN stand-in
    x[6] = x[6].sort().values.flip(0)  # falling
    x[7, -1] = float("nan")  # handed to torch.topk
    return x


@pytest.mark.parametrize("m,k", [(1, 1), (7, 3), (64, 17), (300, 257), (1029, 257), (5000, 257), (4097, 1),
                                 (2000, 2000)])
def test_kth_largest_equals_torch_with_bounds_checked(m, k, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(topk_mod, "_KERNEL", topk_mod._compile(boundscheck=True))
    x = _rows(m, m + k)
    want = x.topk(k, dim=-1).values.amin(-1, keepdim=True)
    got = topk_mod.kth_largest(x, k)
    assert got.shape == (8, 1)
    assert torch.equal(got[:7], want[:7]), (got - want).abs().amax()
    assert torch.equal(got[7], want[7]) or (torch.isnan(got[7]).all() and torch.isnan(want[7]).all())


def test_unlucky_sample_falls_back():
    """A row whose sampled values are all large: the sample's threshold keeps fewer than k values."""
    pytest.importorskip("numba")
    m, k = 4096, 300
    x = torch.full((1, m), -5.0)
    stride = m / topk_mod.SAMPLE
    x[0, (torch.arange(topk_mod.SAMPLE) * stride).long()] = 10.0  # only the sampled slots are high
    x[0, 1] = 0.5
    want = x.topk(k, dim=-1).values.amin(-1, keepdim=True)
    assert torch.equal(topk_mod.kth_largest(x, k), want)


def test_other_layouts_use_torch():
    x = torch.randn(3, 50, dtype=torch.float64)
    assert torch.equal(topk_mod.kth_largest(x, 5), x.topk(5, -1).values.amin(-1, keepdim=True))
    y = torch.randn(50, 3).t()  # not contiguous
    assert torch.equal(topk_mod.kth_largest(y, 5), y.topk(5, -1).values.amin(-1, keepdim=True))
