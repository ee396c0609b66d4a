"""The resolved configuration of a run (saved verbatim in ``results.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from anomaly_probe.errors import UserError

DEFAULT_CHUNK = 1024
"""Queries per forward in the chunked engines (batched, parallel, recompute) and ``--chunk-size``.

Bounds the logits (chunk x vocabulary) and score tiles held at once; CPU throughput is within ~5% from
256 to 2048 (SmolLM2-135M). Results do not depend on it. Defined here, in a module without torch, so
the command line can read it cheaply.
"""
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer; numpy generators need >= 0


@dataclass
class RunConfig:
    """Everything that decides a run's numbers.

    Defaults reproduce the seed experiment's method: StreamingLLM 4 + 252 (cache 256), in-cache positions.
    """

    model: str = "smollm2-135m"
    trained_context: int | None = None  # None: read from the model config
    text: str | None = None  # None: CPython's pydoc_data.topics
    max_tokens: list[int] = field(default_factory=lambda: [1024])
    num_samples: int = 1
    method: str = "streaming_llm"
    sink_size: int = 4
    recent_size: int = 252
    position_mode: str = "in-cache"
    method_args: list[str] = field(default_factory=list)  # --method-arg key=value (h2o, kv_quant, user policies)
    compress_every: int = 1  # evict every C tokens (kvpress's compression interval)
    engine: str = "auto"
    chunk_size: int = DEFAULT_CHUNK  # queries per forward in the chunked engines
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    out: str | None = None  # None: reports/<timestamp>-<model>
    hypotheses: list[str] = field(default_factory=lambda: ["none"])
    probes: str = "auto"
    probe_stride: int = 1  # attention statistics for every Nth query (absolute index a multiple of N)
    stepwise_tokens: int = 1024  # eval-bias token loop: prefix scored per sample (0: whole sample)
    policy_on_sliding: bool = False  # apply the method to sliding-window layers too (default: full layers only)

    def to_dict(self) -> dict:
        return asdict(self)


def check_seed(seed: int) -> None:
    """Raise :class:`~anomaly_probe.errors.UserError` unless ``0 <= seed <= MAX_SEED``."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: use a whole number from 0 to {MAX_SEED}")
