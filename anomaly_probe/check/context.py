"""What every check works on: the options, the loaded model, the token samples, memoised reference scorings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True)
class CheckOptions:
    """The ``anomaly-probe check`` flags.

    Defaults keep the suite fast on ``tiny-neox`` (trained context 128): 2 samples of 256 tokens and a
    StreamingLLM cache of 4 + 60 tokens, so eviction starts after 64 tokens and the samples cross the
    trained context. For a real model pass sizes that match your experiment.
    """

    model: str = "tiny-neox"
    text: str | None = None
    max_tokens: int = 256
    num_samples: int = 2
    method: str = "streaming_llm"
    sink_size: int = 4
    recent_size: int = 60
    position_mode: str = "in-cache"
    method_args: tuple[str, ...] = ()
    compress_every: int = 1
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    tolerance: float | None = None  # None: the dtype's tolerance from Thresholds (fp32 1e-4 nats)
    scorer: str | None = None
    scorer_timeout: float = 600.0  # seconds per scorer call (one sample): generous, it only stops a hang
    policy_on_sliding: bool = False  # apply the method to sliding-window layers too
    only: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_options(options: CheckOptions) -> CacheMethod:
    """Cheap checks before any model is loaded; returns the compressed method the scorer is checked with.

    Raises
    ------
    UserError
        Sizes that cannot exercise eviction, a full-cache ``--method``, too few samples for a scorer.
    """
    from anomaly_probe.methods import build_method

    if options.num_samples < 1:
        raise UserError(f"--num-samples {options.num_samples}: need at least 1 sample")
    if options.scorer and options.num_samples < 2:
        raise UserError("--scorer needs --num-samples >= 2: scoring two samples in sequence catches a cache "
                        "that is not reset between samples")
    if not 0 < options.scorer_timeout < float("inf"):
        raise UserError(f"--scorer-timeout {options.scorer_timeout}: must be a finite number of seconds > 0")
    if options.tolerance is not None and not 0 < options.tolerance < float("inf"):
        raise UserError(f"--tolerance {options.tolerance}: must be a finite number > 0 (nats)")
    from anomaly_probe.config import check_seed

    check_seed(options.seed)
    method = build_method(options.method, sink_size=options.sink_size, recent_size=options.recent_size,
                          position_mode=options.position_mode, compress_every=options.compress_every,
                          method_args=options.method_args)
    rounds = type(method).quantize is not CacheMethod.quantize
    if (method.is_full and not rounds) or method.name == "recompute":
        raise UserError(f"--method {options.method}: check needs a compressed cache (streaming_llm, window, h2o, "
                        "kv_quant, your policy...) to compare with the full cache")
    need = (method.capacity or 0) + 2
    if options.max_tokens < need:
        raise UserError(f"--max-tokens {options.max_tokens}: must be >= sink + recent + 2 = {need} so that tokens "
                        "are evicted; use a longer sample or a smaller --recent-size")
    return method


class CheckContext:
    """A loaded model, its samples and memoised reference scorings.

    Parameters
    ----------
    options : CheckOptions
        Resolved flags.
    """

    def __init__(self, options: CheckOptions) -> None:
        from anomaly_probe.device import dtype_name, resolve_device, resolve_dtype
        from anomaly_probe.models import load_model
        from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS
        from anomaly_probe.text import read_text, samples, tokenize

        self.options = options
        self.method = validate_options(options)
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.dtype_name = dtype_name(self.dtype)
        self.tolerance = options.tolerance or DEFAULT_THRESHOLDS.tolerance(self.dtype_name)
        text = read_text(options.text)
        torch.manual_seed(options.seed)
        self.loaded = load_model(options.model, device=self.device, dtype=self.dtype, seed=options.seed)
        ids = tokenize(self.loaded.tokenizer, text)
        self.samples: list[torch.Tensor] = samples(ids, options.max_tokens, options.num_samples)
        self._memo: dict[tuple, object] = {}

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    def reload_model(self) -> None:
        """Load a fresh copy of the model (same spec, device, dtype and seed), e.g. after a scorer changed it.

        Memoised scorings stay: they were made on the unchanged model.
        """
        from anomaly_probe.models import load_model

        torch.manual_seed(self.options.seed)
        self.loaded = load_model(self.options.model, device=self.device, dtype=self.dtype, seed=self.options.seed)

    def environment(self) -> dict:
        from anomaly_probe.attention.hf import current_implementation
        from anomaly_probe.environment import describe_environment

        return describe_environment(self.device, self.dtype, current_implementation(self.model))

    def score(self, method: CacheMethod, engine: str = "auto", sample: int = 0):
        """Per-token scores of ``samples[sample]`` under ``method`` (scored once, then memoised).

        Returns
        -------
        anomaly_probe.engines.TokenScores
        """
        from anomaly_probe.engines import pick_engine

        engine = pick_engine(engine, method)
        key = (method.label(), engine, sample)
        if key not in self._memo:
            self._memo[key] = self.score_ids(method, engine, self.samples[sample])
        return self._memo[key]

    def score_ids(self, method: CacheMethod, engine: str, ids: torch.Tensor, observer=None):
        """Score arbitrary ``ids`` (shape (T,)); not memoised."""
        from anomaly_probe.engines import ENGINES, pick_engine

        from anomaly_probe.engines.layers import sliding_policy

        fn = ENGINES.get(pick_engine(engine, method))
        kwargs = {"observer": observer} if observer is not None else {}
        with sliding_policy(self.options.policy_on_sliding):
            return fn(self.model, ids, method, **kwargs)

    def memoised(self) -> dict[tuple, object]:
        """Every memoised scoring, keyed by (method label, engine, sample)."""
        return dict(self._memo)
