"""Statistics of a comparison: is the difference between two experiments (or two seed
groups) on the same rows real? Pure numpy on arrays of gold labels and per-row
predictions: no experiment folders, no command line (fine_tune.comparison loads the
predictions, fine_tune.compare is the command; its docstring says what the interval and
the p-values mean).

Read in this order:

- bootstrap.py    `paired_bootstrap` and `Difference`: the interval of A - B and its p-value
- draws.py        the random draws: bootstrap resamples, permutation swaps, seed-group splits
- scoring.py      every metric of the task on many resamples at once (vectorised)
- permutation.py  the p-values: row swaps of one model against one, splits of seed groups

fine_tune.comparison and fine_tune.compare import what they need from here.
"""
from fine_tune.stats.bootstrap import Difference, paired_bootstrap
from fine_tune.stats.draws import chunk_sizes, draw_resamples, draw_swaps, seed_splits
from fine_tune.stats.permutation import p_value_test
from fine_tune.stats.scoring import confusion_metrics

__all__ = ["Difference", "chunk_sizes", "confusion_metrics", "draw_resamples", "draw_swaps",
           "p_value_test", "paired_bootstrap", "seed_splits"]
