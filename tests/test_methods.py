"""Unit tests: each method's kept indices and the positions it assigns (no model)."""

import pytest
import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, StreamingLLM, WindowCache, build_method


def test_full_keeps_everything_at_absolute_positions():
    m = FullCache()
    assert m.keep(10_000) is None
    t = torch.arange(50)
    assert torch.equal(m.query_position(t), t)
    assert m.visible(t, t).equal(torch.ones(50, 50, dtype=torch.bool).tril())


def test_streaming_keeps_sinks_and_recent():
    m = StreamingLLM(sink_size=2, recent_size=3)
    assert m.keep(5) is None
    assert m.keep(6).tolist() == [0, 1, 3, 4, 5]
    assert m.keep(9).tolist() == [0, 1, 6, 7, 8]


def test_streaming_visible_matches_eviction_semantics():
    """Query t sees j < sink or j >= t - recent (recent kept keys + itself), j <= t."""
    m = StreamingLLM(sink_size=2, recent_size=3)
    vis = m.visible(torch.tensor([10]), torch.arange(11))[0]
    assert torch.nonzero(vis).flatten().tolist() == [0, 1, 7, 8, 9, 10]
    # Simulate the stepwise cache and compare for every t.
    cache: list[int] = []
    for t in range(20):
        seen = cache + [t]
        assert torch.nonzero(m.visible(torch.tensor([t]), torch.arange(t + 1))[0]).flatten().tolist() == seen
        keep = m.keep(len(seen))
        cache = seen if keep is None else [seen[i] for i in keep.tolist()]


@pytest.mark.parametrize("mode,expected_q", [("absolute", 10), ("in-cache", 5), ("naive", 5)])
def test_query_positions_by_mode(mode, expected_q):
    m = StreamingLLM(sink_size=2, recent_size=3, position_mode=mode)
    assert m.query_position(torch.tensor(10)).item() == expected_q
    assert m.query_position(torch.tensor(3)).item() == 3  # before the cache fills, all modes agree


def test_key_positions_by_mode():
    keys = torch.tensor([0, 1, 7, 8, 9, 10])
    t = torch.tensor(10)
    absolute = StreamingLLM(2, 3, "absolute").key_position(t, keys)
    in_cache = StreamingLLM(2, 3, "in-cache").key_position(t, keys)
    naive = StreamingLLM(2, 3, "naive").key_position(t, keys)
    assert absolute.tolist() == [0, 1, 7, 8, 9, 10]
    assert in_cache.tolist() == [0, 1, 2, 3, 4, 5]  # slots 0..n-1, query in the last slot
    assert naive.tolist() == [0, 1, 5, 5, 5, 5]  # rotated at insertion with the cache length then


def test_window_is_streaming_without_sinks():
    w = build_method("window", sink_size=4, recent_size=252)
    assert isinstance(w, WindowCache) and w.sink_size == 0 and w.capacity == 256
    assert w.keep(257).tolist() == list(range(1, 257))


@pytest.mark.parametrize("kwargs", [dict(sink_size=-1), dict(recent_size=-5), dict(sink_size=0, recent_size=0),
                                    dict(position_mode="sideways")])
def test_bad_method_options_raise_user_errors(kwargs):
    with pytest.raises(UserError):
        build_method("streaming_llm", **{"sink_size": 4, "recent_size": 252, **kwargs})


def test_unknown_method_suggests():
    with pytest.raises(UserError, match="Did you mean 'window'"):
        build_method("windw")
