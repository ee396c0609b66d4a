"""One model load serves every cell of that model: a cache that holds the last model loaded."""

from __future__ import annotations

from dataclasses import replace


class ModelCache:
    """The most recently loaded model, reused while cells ask for the same weights.

    Only one model is held at a time (a sweep over several models never holds two in memory); the
    executors order cells by :meth:`~anomaly_probe.sweep.grid.Cell.model_key` so that each model loads once.

    Attributes
    ----------
    loads : int
        How many times a model was actually loaded (tests check the reuse).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._loaded = None
        self.loads = 0

    def get(self, config):
        """The :class:`~anomaly_probe.models.loading.LoadedModel` for ``config`` (a RunConfig).

        The trained-context override does not change the weights: it is applied to a copy of the record.
        """
        import torch

        from anomaly_probe.device import resolve_device, resolve_dtype
        from anomaly_probe.errors import UserError
        from anomaly_probe.models import load_model
        from anomaly_probe.models.loading import _trained_context

        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        seeded = config.model.startswith("tiny-neox")  # random weights drawn from the seed
        key = (config.model, str(device), str(dtype), config.seed if seeded else None)
        if key != self._key:
            self._loaded = self._key = None  # release the previous model first
            torch.manual_seed(config.seed)
            self._loaded = load_model(config.model, device=device, dtype=dtype, seed=config.seed,
                                      trained_context=config.trained_context)
            self._key = key
            self.loads += 1
        ctx = config.trained_context or _trained_context(self._loaded.model.config)
        if ctx is None:  # load_model would have said the same without the cache
            raise UserError(f"cannot read the trained context of {config.model!r} from its config; "
                            "give trained_context in the grid")
        return replace(self._loaded, trained_context=int(ctx))
