"""``python -m anomaly_probe`` is the same as the ``anomaly-probe`` console script."""

from anomaly_probe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
