"""The one-pass statistics kernel (probes/row_kernel.py): its sums equal torch's, with bounds checked."""

import numpy as np
import pytest
import torch

HIDDEN = -1e30


def _case(R, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(R, m, generator=g) * torch.tensor([1.0, 8.0, 60.0])[torch.arange(R) % 3][:, None]
    x[0, (m + 1) // 2:] = HIDDEN  # hidden keys (a row with none visible is recomputed by the caller)
    p = torch.softmax(x, -1)
    dist = torch.arange(m, 0, -1, dtype=torch.float32)
    sink = (torch.arange(m) < 4).float()
    off = torch.arange(R, dtype=torch.float32)
    return x, p, dist, sink, off


def _want(x, p, dist, sink, off, recent, b16, bbf):
    vis = x != HIDDEN
    lost16, lostbf = (p > 0) & (p <= b16), (p > 0) & (p <= bbf)
    return torch.stack([
        x.amax(-1), x.masked_fill(~vis, float("inf")).amin(-1), p.amax(-1), (p * x.masked_fill(~vis, 0)).sum(-1),
        vis.sum(-1).float(), p @ dist, p @ sink, (p * (dist[None] < off[:, None] + recent)).sum(-1),
        lost16.sum(-1).float(), torch.where(lost16, p, 0).sum(-1),
        lostbf.sum(-1).float(), torch.where(lostbf, p, 0).sum(-1)], -1)


@pytest.mark.parametrize("m", [1, 5, 16, 17, 33, 300, 1000])
def test_sums_equal_torch_with_bounds_checked(m):
    pytest.importorskip("numba")
    from anomaly_probe.probes import row_kernel

    kernel = row_kernel._compile(boundscheck=True)
    x, p, dist, sink, off = _case(6, m, m)
    b16, bbf = 2.0 ** -25, 2.0 ** -134
    out = np.empty((6, len(row_kernel.SUMS)), dtype=np.float32)
    kernel(x.numpy(), p.numpy(), dist.numpy(), sink.numpy(), off.numpy(), np.float32(7), np.float32(HIDDEN),
           np.float32(b16), np.float32(bbf), out)
    want = _want(x, p, dist, sink, off, 7, b16, bbf)
    got = torch.from_numpy(out)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True), (got - want).abs().amax(0)
    if m >= 300:
        assert want[:, 8].max() > 0  # rows with fp16 underflow were exercised
