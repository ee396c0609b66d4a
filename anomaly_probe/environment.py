"""The environment record saved with every run (the report's hardware table)."""

from __future__ import annotations

import os
import platform
import sys

import psutil
import torch


def describe_environment(device: torch.device, dtype: torch.dtype, attn_implementation: str) -> dict:
    """Library versions, device and memory: what decides whether two runs are comparable."""
    import transformers

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        device_name = "Apple MPS"
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device.type,
        "device_name": device_name,
        "dtype": str(dtype).replace("torch.", ""),
        "attn_implementation": attn_implementation,
        "cpu_count": os.cpu_count(),
        "total_memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "argv": list(sys.argv),
    }
