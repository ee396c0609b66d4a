"""Load a GGUF checkpoint once, then from a local safetensors cache.

transformers dequantises GGUF on every load (~16 s for SmolLM2-135M). We save the dequantised weights,
config and tokenizer to ``$ANOMALY_PROBE_CACHE`` (default ``~/.cache/anomaly-probe``) keyed by the
file's name, size and mtime; later loads take well under a second. A file that is not a readable GGUF
(wrong magic bytes, truncated, corrupt) is bad input: one :class:`~anomaly_probe.errors.UserError` line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from anomaly_probe.errors import UserError

GGUF_MAGIC = b"GGUF"

def cache_root() -> Path:
    return Path(os.environ.get("ANOMALY_PROBE_CACHE", Path.home() / ".cache" / "anomaly-probe"))


def converted_dir(gguf_path: Path) -> Path:
    st = gguf_path.stat()
    return cache_root() / f"{gguf_path.stem}-{st.st_size}-{int(st.st_mtime)}"


def load_gguf(gguf_path: Path, dtype):
    """Return ``(model, tokenizer)`` for a GGUF file, converting it on first use.

    Parameters
    ----------
    gguf_path : Path
        The ``.gguf`` file.
    dtype : torch.dtype
        Dtype to load the dequantised weights in.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(gguf_path)
    if not (target / "model.safetensors").exists():
        _check_magic(gguf_path)
        try:
            _convert(gguf_path, target)
        except Exception as exc:  # noqa: BLE001 - transformers/gguf raise anything on a corrupt file
            from anomaly_probe.failures import is_out_of_memory

            if is_out_of_memory(exc):
                raise  # the caller names the remedy
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "(no message)"
            kind = type(exc).__name__ if type(exc).__name__ != "error" else f"{type(exc).__module__}.error"
            raise UserError(f"cannot read GGUF file {str(gguf_path)!r}: {kind}: {first}; is it a "
                            "complete, uncorrupted GGUF checkpoint?") from None
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
    return model, tokenizer


def _check_magic(gguf_path: Path) -> None:
    """Refuse a file that does not start with the GGUF magic bytes (or cannot be read)."""
    try:
        with open(gguf_path, "rb") as f:
            head = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise UserError(f"cannot read GGUF file {str(gguf_path)!r}: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        what = "it is empty" if not head else "it does not start with the GGUF magic bytes"
        raise UserError(f"{str(gguf_path)!r} is not a GGUF file: {what}")


def _convert(gguf_path: Path, target: Path) -> None:
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights we save are plain float32
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        safetensors.torch.save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a half-written cache is never used
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
