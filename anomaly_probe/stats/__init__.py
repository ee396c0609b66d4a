"""Statistics for the judges: block bootstrap, paired tests, changepoints, thresholds."""

from anomaly_probe.stats.bootstrap import Blocks, describe_ci, make_blocks, mean_ci, ratio_ci, resample_sums
from anomaly_probe.stats.changepoint import changepoint_test, mean_shift_changepoint
from anomaly_probe.stats.tests import paired_block_test
from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS, Thresholds

__all__ = ["Blocks", "describe_ci", "make_blocks", "mean_ci", "ratio_ci", "resample_sums", "mean_shift_changepoint",
           "changepoint_test", "paired_block_test", "DEFAULT_THRESHOLDS", "Thresholds"]
