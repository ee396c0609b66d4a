"""RowSpans (computed once per forward) answer every chunk exactly as reducing the chunk's mask would."""

import numpy as np
import torch

from anomaly_probe.attention.fused import first_partial_column, key_span
from anomaly_probe.attention.spans import spans_of


def _masks():
    g = torch.Generator().manual_seed(0)
    yield torch.ones(6, 20, dtype=torch.bool).tril(14)[None, None]  # causal, the last 6 queries of 20 keys
    band = torch.zeros(8, 40, dtype=torch.bool)
    for r in range(8):
        q = 32 + r
        band[r, :4] = True  # sinks
        band[r, q - 10:q + 1] = True  # recent window
    yield band[None, None]
    yield torch.rand(1, 1, 7, 30, generator=g) > 0.5  # arbitrary
    yield torch.rand(2, 3, 5, 25, generator=g) > 0.3  # per batch and head
    empty = torch.ones(4, 12, dtype=torch.bool).tril(5)
    empty[1] = False  # a row that sees nothing
    yield empty[None, None]


def test_spans_match_the_chunk_reductions():
    for mask in _masks():
        spans = spans_of(mask)
        tq = mask.shape[-2]
        for lo in range(tq):
            for hi in range(lo + 1, tq + 1):
                vis = mask[..., lo:hi, :]
                a, b, full = spans.chunk(lo, hi)
                assert (a, b) == key_span(vis), (mask.shape, lo, hi)
                if vis.any():
                    assert full - a == first_partial_column(vis[..., a:b]), (mask.shape, lo, hi)
                    assert vis[..., a:full].all() and not vis[..., :a].any() and not vis[..., b:].any()


def test_spans_of_a_one_row_mask_broadcast():
    mask = torch.tensor([[[[False, True, True, False]]]])
    assert spans_of(mask).chunk(0, 1) == (1, 3, 3)
    assert isinstance(spans_of(mask).first, np.ndarray)
