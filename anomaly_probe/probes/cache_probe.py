"""Cache probe: keys held and exact K+V bytes per layer after every forward."""

from __future__ import annotations

import numpy as np


def cache_sizes(cache) -> tuple[list[int], list[int]]:
    """Keys held and bytes of keys plus values, per layer.

    Parameters
    ----------
    cache : transformers Cache or sequence of (keys, values)
        Layers with ``keys``/``values`` of shape (B, Hkv, n, D); uninitialised layers count 0.

    Returns
    -------
    tuple of list of int
        ``kv_len`` (tokens) and ``kv_bytes`` (``numel * element_size`` of keys and values).
    """
    layers = getattr(cache, "layers", cache) or ()
    lens, nbytes = [], []
    for layer in layers:
        k, v = (layer.keys, layer.values) if hasattr(layer, "keys") else (layer[0], layer[1])
        if k is None or k.dim() < 2:
            lens.append(0)
            nbytes.append(0)
            continue
        lens.append(k.shape[-2])
        nbytes.append(k.numel() * k.element_size() + v.numel() * v.element_size())
    return lens, nbytes


class CacheProbe:
    """Records :func:`cache_sizes` after each forward, for each of its query rows.

    Parameters
    ----------
    num_layers : int
        Layers of the model (columns of the (S, layers) arrays).
    """

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self._records: list[tuple[int, int, list[int], list[int]]] = []  # (row0, n_rows, lens, bytes)

    def after_forward(self, row0: int, n_rows: int, cache) -> None:
        lens, nbytes = cache_sizes(cache)
        self._records.append((row0, n_rows, lens, nbytes))

    def columns(self, n_rows: int) -> dict[str, np.ndarray]:
        """``cache.kv_len`` and ``cache.kv_bytes``, (S, layers) int64; -1 where nothing was recorded."""
        kv_len = np.full((n_rows, self.num_layers), -1, dtype=np.int64)
        kv_bytes = np.full((n_rows, self.num_layers), -1, dtype=np.int64)
        for row0, n, lens, nbytes in self._records:
            kv_len[row0:row0 + n, :len(lens)] = lens[:self.num_layers]
            kv_bytes[row0:row0 + n, :len(nbytes)] = nbytes[:self.num_layers]
        return {"cache.kv_len": kv_len, "cache.kv_bytes": kv_bytes}
