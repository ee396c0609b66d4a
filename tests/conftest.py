"""Shared fixtures: the tiny GPT-NeoX (fast tier) and SmolLM2-135M (slow tier)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the seeded random GPT-NeoX, trained context 128."""
    from anomaly_probe.models.tiny_neox import build_tiny_neox

    return build_tiny_neox(seed=0)


@pytest.fixture(scope="session")
def tiny_ids(tiny):
    """700 byte tokens of the default text: long enough to slide small windows many times."""
    from anomaly_probe.text import default_text, tokenize

    return tokenize(tiny[1], default_text())[:700]


@pytest.fixture(scope="session")
def smollm2():
    """The default real model (float32, CPU)."""
    from anomaly_probe.models import load_model

    return load_model("smollm2-135m", device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="session")
def smol_ids(smollm2):
    from anomaly_probe.text import default_text, tokenize

    return tokenize(smollm2.tokenizer, default_text())


@pytest.fixture(scope="session")
def smollm2_12k_position_run(tmp_path_factory):
    """One ``run --hypothesis position`` of SmolLM2-135M on 12000 tokens (the demo's length), shared by the
    slow tests that read it (the position verdict, and run vs import agreement). Its run folder."""
    from anomaly_probe.cli import main

    run_dir = tmp_path_factory.mktemp("smollm2-12k") / "run"
    assert main(["run", "--model", "smollm2-135m", "--hypothesis", "position", "--max-tokens", "12000",
                 "--num-samples", "1", "--out", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (CPU reductions may depend on the count: the same count as a subprocess
    or a one-CPU Ray worker); restored after. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
