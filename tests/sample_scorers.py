"""Sample user scorers for ``anomaly-probe check --scorer``: one correct, four with a planted bug.

Each is the seed author's token loop with a ``compress_fn``::

    for idx in range(seq_len - 1):
        outputs = model(input_ids[:, idx:idx+1], past_key_values=cache)
        nll = loss(outputs.logits[:, -1], input_ids[:, idx+1])
        cache = compress_fn(cache)

written against the documented signature ``fn(model, input_ids (1, T), method: dict) -> T-1 NLLs``.
The planted bugs: ``shifted_target`` scores the token just fed; ``first_token_scored`` returns T values
(a uniform-prior NLL for the first token); ``no_position_shift`` evicts without re-rotating the kept keys;
``no_reset`` keeps one cache per method across calls. The check must name each of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Compressor:
    """``compress_fn`` for a plain method description: keep sinks + recent, re-rotate keys for in-cache."""

    def __init__(self, model, method: dict, rotate: bool = True) -> None:
        from anomaly_probe.engines.cache_ops import InCacheRotator
        from anomaly_probe.models.rope import find_rope

        self.capacity = method["capacity"]
        self.sink, self.recent = method["sink_size"], method["recent_size"]
        self.mode = method["position_mode"] or "absolute"
        self.rotate = rotate and self.mode == "in-cache"
        self.rotator = InCacheRotator(find_rope(model), model.config.num_hidden_layers) if self.rotate else None
        self.fed = 0  # tokens fed through this cache

    def position_ids(self, cache):
        if self.mode == "absolute":
            return torch.tensor([[self.fed]])
        if self.mode == "in-cache" and self.rotate:
            return torch.tensor([[cache.get_seq_length()]])
        return None  # transformers derives the position from the cache length

    def __call__(self, cache):
        from anomaly_probe.engines.cache_ops import evict

        n = cache.get_seq_length()
        keep = None
        if self.capacity is not None and n > self.capacity:
            keep = torch.cat([torch.arange(self.sink), torch.arange(n - self.recent, n)])
        if self.rotator is not None:
            self.rotator.after_step(cache, n - 1, keep)
        elif keep is not None:
            evict(cache, keep)
        self.fed += 1
        return cache


def _loop(model, input_ids, method, *, cache=None, compress=None, target_offset=1, rotate=True):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config) if cache is None else cache
    compress = Compressor(model, method, rotate) if compress is None else compress
    seq_len = input_ids.shape[1]
    nlls = []
    for idx in range(seq_len - 1):
        outputs = model(input_ids[:, idx:idx + 1], cache=cache, position_ids=compress.position_ids(cache),
                        use_cache=True)
        nll = F.cross_entropy(outputs.logits[:, -1].float(), input_ids[:, idx + target_offset])
        nlls.append(nll.item())
        cache = compress(cache)
    return nlls


def correct(model, input_ids, method):
    """The reference loop, done right."""
    return _loop(model, input_ids, method)


def shifted_target(model, input_ids, method):
    """BUG: the target is the token just fed (input_ids[:, idx]) instead of input_ids[:, idx + 1]."""
    return _loop(model, input_ids, method, target_offset=0)


def first_token_scored(model, input_ids, method):
    """BUG: the first token gets a (uniform-prior) NLL too, so T values come back instead of T-1."""
    return [math.log(model.config.vocab_size)] + _loop(model, input_ids, method)


def no_position_shift(model, input_ids, method):
    """BUG: evicted caches keep the kept keys at their old positions (no re-rotation to the slots)."""
    return _loop(model, input_ids, method, rotate=False)


_STATE: dict = {}


def no_reset(model, input_ids, method):
    """BUG: one cache per method for the whole evaluation, never reset between samples."""
    from transformers import DynamicCache

    if method["label"] not in _STATE:
        _STATE[method["label"]] = (DynamicCache(config=model.config), Compressor(model, method))
    cache, compress = _STATE[method["label"]]
    return _loop(model, input_ids, method, cache=cache, compress=compress)


def wrong_type(model, input_ids, method):
    """Returns a string: bad input (exit code 2)."""
    return "not a list of floats"


def wrong_length(model, input_ids, method):
    """Returns 10 values whatever the sample length: bad input (exit code 2)."""
    return [1.0] * 10


def crashes(model, input_ids, method):
    """Raises: an ERROR result (exit code 1)."""
    raise RuntimeError("planted crash")
