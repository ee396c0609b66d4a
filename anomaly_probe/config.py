"""The resolved configuration of a run (saved verbatim in ``results.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from anomaly_probe.errors import UserError

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
    engine: str = "auto"
    chunk_size: int = 1024  # queries per forward in the batched engine
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    out: str | None = None  # None: reports/<timestamp>-<model>
    hypotheses: list[str] = field(default_factory=lambda: ["none"])
    probes: str = "auto"
    stepwise_tokens: int = 1024  # eval-bias token loop: prefix scored per sample (0: whole sample)

    def to_dict(self) -> dict:
        return asdict(self)


def check_seed(seed: int) -> None:
    """Raise :class:`~anomaly_probe.errors.UserError` unless ``0 <= seed <= MAX_SEED``."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed {seed}: use a whole number from 0 to {MAX_SEED}")
