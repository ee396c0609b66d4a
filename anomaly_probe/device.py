"""Resolve ``--device`` and ``--dtype`` and check that the pair can actually run."""

from __future__ import annotations

import torch

from anomaly_probe.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name not in DEVICES:
        raise UserError(f"Unknown device {name!r}. Available: {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name == "mps" and not mps:
        raise UserError("--device mps: no Apple MPS device is available here; use --device cpu or auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU and float16 on GPUs (what the seed experiment ran).

    Raises
    ------
    UserError
        Unknown dtype, or a dtype whose matmul/softmax fails on ``device``.
    """
    if name == "auto":
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    elif name in DTYPES:
        dtype = DTYPES[name]
    else:
        raise UserError(f"Unknown dtype {name!r}. Available: auto, {', '.join(DTYPES)}")
    try:
        a = torch.ones(4, 4, dtype=dtype, device=device)
        torch.softmax(a @ a, dim=-1).sum().item()
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"--dtype {name} cannot run on {device.type} ({str(exc).splitlines()[0][:120]}); "
                        "use --dtype float32") from None
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
