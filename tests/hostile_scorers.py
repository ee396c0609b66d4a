"""User scorers that misbehave instead of scoring wrong: ``check --scorer`` must contain each of them.

``hangs`` never returns (and swallows ``Exception``), ``blocks_signals`` is stuck where no Python code
runs an interruption, ``exits`` calls ``sys.exit(3)``, ``nan_weights`` scores correctly and then
leaves NaN in a weight, ``to_train_mode`` leaves the model in train mode.
"""

from __future__ import annotations

import signal
import sys
import time

import torch

from sample_scorers import correct


def hangs(model, input_ids, method):
    """Never returns; a scorer's own ``except Exception`` must not swallow the timeout."""
    while True:
        try:
            time.sleep(0.05)
        except Exception:  # noqa: BLE001 - the planted bug
            pass


def blocks_signals(model, input_ids, method):
    """Blocks SIGALRM and sleeps: the timeout cannot interrupt it; the watchdog must end the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    time.sleep(3600)


def exits(model, input_ids, method):
    """Calls sys.exit(3) (the seed's evaluation scripts do this on a bad sample)."""
    sys.exit(3)


def nan_weights(model, input_ids, method):
    """Scores correctly, then writes NaN into the first layer's query/key/value weight."""
    out = correct(model, input_ids, method)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "layers.0" in n and p.dim() == 2).fill_(float("nan"))
    return out


def to_train_mode(model, input_ids, method):
    """Scores correctly, then leaves the model in train mode (dropout would change every later score)."""
    out = correct(model, input_ids, method)
    model.train()
    return out
