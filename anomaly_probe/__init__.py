"""anomaly-probe: diagnose surprising KV-cache compression results on causal LMs.

Nothing runs at import time: no attention function is registered, no model is loaded.
"""

__version__ = "0.1.0"
