"""The stepwise engine's thread count: chosen by measurement, restored afterwards, results unchanged."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_stepwise
from anomaly_probe.engines import step_threads
from anomaly_probe.engines.step_threads import ENV, _measure, candidates, stepwise_threads
from anomaly_probe.methods import FullCache
from anomaly_probe.threads import can_toggle


class _SlowAt(torch.nn.Module):
    """A stand-in model whose single-token forward is slow at ``slow`` intra-op threads."""

    def __init__(self, config, slow: int) -> None:
        super().__init__()
        self.config, self.slow = config, slow
        self.calls = 0

    def forward(self, input_ids, cache=None, use_cache=True):
        self.calls += 1
        time.sleep(0.004 if torch.get_num_threads() == self.slow else 0.0005)


def test_candidates():
    assert candidates(1) == [1]
    assert candidates(2) == [1, 2]
    assert candidates(8) == [1, 4, 8]


def test_measurement_picks_the_faster_count(tiny):
    if not can_toggle(torch.get_num_threads()):
        pytest.skip("torch cannot change and restore its thread count here (stepwise_threads measures nothing)")
    config = tiny[0].config
    before = torch.get_num_threads()
    assert _measure(_SlowAt(config, slow=2), torch.device("cpu"), [1, 2]) == 1
    assert _measure(_SlowAt(config, slow=1), torch.device("cpu"), [1, 2]) == 2
    assert torch.get_num_threads() == before  # restored


def test_choice_is_cached_fixed_by_env_and_skipped_off_cpu(tiny, monkeypatch):
    model = _SlowAt(tiny[0].config, slow=1)
    monkeypatch.setenv(ENV, "3")
    assert stepwise_threads(model, torch.device("cpu")) == 3 and model.calls == 0
    monkeypatch.delenv(ENV)
    assert stepwise_threads(model, torch.device("meta")) == torch.get_num_threads() and model.calls == 0
    monkeypatch.setattr(step_threads, "_CHOSEN", {})
    first = stepwise_threads(model, torch.device("cpu"))
    calls = model.calls
    assert stepwise_threads(model, torch.device("cpu")) == first and model.calls == calls  # measured once


def test_stepwise_records_its_threads_and_keeps_the_numbers(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:80]
    before = torch.get_num_threads()
    a = score_stepwise(model, ids, FullCache())
    b = score_stepwise(model, ids, FullCache(), threads=1)
    assert a.extra["threads"] in candidates(before) and b.extra["threads"] == 1
    assert torch.get_num_threads() == before
    ref = score_batched(model, ids, FullCache())
    assert np.max(np.abs(a.nll - ref.nll)) <= 1e-4 and np.max(np.abs(b.nll - ref.nll)) <= 1e-4
