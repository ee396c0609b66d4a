"""Model loading: built-in models, GGUF files, local folders and hub IDs."""

from anomaly_probe.models.loading import BUILTIN_MODELS, LoadedModel, load_model

__all__ = ["BUILTIN_MODELS", "LoadedModel", "load_model"]
