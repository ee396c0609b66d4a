"""The resolved configuration of a run (saved verbatim in ``results.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    probes: str = "none"
    stepwise_tokens: int = 2048  # eval-bias token loop: prefix scored per sample (0: whole sample)

    def to_dict(self) -> dict:
        return asdict(self)
