"""kth_largest (the top-k intervention's threshold) equals torch.topk's k-th value on every kind of row."""

import numpy as np
import pytest
import torch

from anomaly_probe.attention.kth_largest import kth_largest


def _want(x, k):
    return x.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)


@pytest.mark.parametrize("m,k", [(12000, 257), (5000, 257), (3000, 257), (2100, 257), (4200, 257), (300, 257),
                                 (257, 257), (40, 1), (1000, 999), (64, 3), (100, 4), (16, 1)])
def test_equals_topk(m, k):
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(m + k)
    x = torch.randn(2, 3, 7, m, generator=g) * 5
    x[0, 0, 0, : m // 2] = -float("inf")  # masked keys
    x[0, 1, 1] = torch.round(x[0, 1, 1])  # many ties
    x[1, 2, 3, ::3] = 1e30  # huge values
    assert torch.equal(kth_largest(x, k), _want(x, k))


def test_adversarial_rows_where_the_sample_misleads():
    pytest.importorskip("numba")
    m, k = 12000, 257
    x = torch.zeros(3, m)
    x[0, 1::16] = 1.0  # every sampled key is small, the large ones sit between the samples
    x[0, ::16] = -1.0
    x[1, :300] = 5.0  # the top keys all at the start
    x[2] = torch.arange(m, dtype=torch.float32)  # sorted
    assert torch.equal(kth_largest(x, k), _want(x, k))


def test_nan_rows_follow_torch():
    x = torch.randn(4, 1000)
    x[1, 10] = float("nan")
    got, want = kth_largest(x, 20), _want(x, 20)
    assert torch.isnan(got[1]).all() and torch.isnan(want[1]).all()
    assert torch.allclose(got, want, equal_nan=True)


def test_no_write_outside_the_heap():
    """Every sample rank the kernel may use fits its heap (a write past it corrupted the allocator in a
    12000-token demo run): the kernel compiled with bounds checks, over every row length up to 5000."""
    pytest.importorskip("numba")
    from anomaly_probe.attention import kth_largest as mod

    kernel = mod._compile(boundscheck=True)
    g = torch.Generator().manual_seed(1)
    for k in (1, 3, 64, 257):
        for m in sorted({k, k + 1, 2 * k, 8 * k - 1, 8 * k, 16 * k + 5, 3000, 5000} - {0}):
            if m < k:
                continue
            x = torch.randn(3, m, generator=g)
            out = np.empty(3, dtype=np.float32)
            kernel(x.numpy(), k, out)
            assert torch.equal(torch.from_numpy(out)[:, None], _want(x, k)), (m, k)


def test_other_dtypes_use_torch():
    x = torch.randn(3, 500, dtype=torch.float64)
    assert torch.equal(kth_largest(x, 10), _want(x, 10))
    with pytest.raises(ValueError):
        kth_largest(x, 0)
