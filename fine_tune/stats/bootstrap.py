"""The paired bootstrap of two experiments, or two seed groups, on the same rows:
`paired_bootstrap` gives {metric: Difference}, A's and B's scores, A - B, its percentile
interval over resamples of the rows (and, for groups, of the seeds within each group),
and the permutation test's p-value (fine_tune.stats.permutation). What the interval and
the p-value mean: fine_tune.compare's docstring.
"""
from dataclasses import dataclass

import numpy as np

from fine_tune.glue import get_task
from fine_tune.stats.draws import draw_resamples
from fine_tune.stats.permutation import seed_test, swap_test
from fine_tune.stats.scoring import Confusions, Scores, metrics_of


@dataclass(frozen=True)
class Difference:
    """One metric's comparison: A's and B's scores (group means for seed groups), A - B,
    the interval [low, high] of A - B, and the two-sided p-value (None: not computed)."""
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float | None


def _group_means(values: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """values [seeds, resamples], drawn [resamples, draws] -> each resample's mean over
    its drawn seeds."""
    if values.shape[0] == 1:
        return values[0]
    return np.take_along_axis(values.T, drawn, axis=1).mean(axis=1)


def paired_bootstrap(task, gold, a: list[np.ndarray], b: list[np.ndarray], resamples=10000,
                     seed=0, confidence=0.95) -> dict[str, Difference]:
    """{metric: Difference} of A against B on the same rows (see fine_tune.compare's docstring).

    task: a fine_tune.glue.Task; gold: the gold label ids (or scores) of the rows; a, b:
    lists of per-row predictions (label ids or scores), one array per seed (a single
    experiment is a list of one). A's score is the mean over its seeds. The interval is
    the paired (rows) bootstrap, hierarchical (rows, then seeds within each group) when a
    side has several seeds; the p-value is the paired permutation test for one model
    against one, and the seed permutation test otherwise."""
    task = get_task(task.trained_as)
    gold = np.asarray(gold)
    a, b = [np.asarray(p) for p in a], [np.asarray(p) for p in b]
    if not a or not b:
        raise ValueError("a and b need at least one array of predictions each")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rows = len(gold)
    if rows == 0 or any(p.shape != gold.shape for p in a + b):
        raise ValueError(f"every prediction array must have the gold's shape {gold.shape}")
    models = a + b
    if task.regression:
        scorer = Scores(gold, models)
    else:
        k = task.num_labels
        for values in [gold] + models:
            if values.min() < 0 or values.max() >= k:
                raise ValueError(f"label ids must be in [0, {k})")
        scorer = Confusions(k, gold, models)
    ka, kb = len(a), len(b)
    full = {name: values[:, 0] for name, values in metrics_of(task, scorer, None, rows).items()}
    differences = {name: np.empty(resamples) for name in task.metrics}
    done = 0
    for picked, seeds_a, seeds_b in draw_resamples(rows, resamples, seed, ka, kb):
        values = metrics_of(task, scorer, picked, rows)
        for name in task.metrics:
            differences[name][done:done + len(picked)] = (
                _group_means(values[name][:ka], seeds_a) - _group_means(values[name][ka:], seeds_b))
        done += len(picked)
    observed = {name: full[name][:ka].mean() - full[name][ka:].mean() for name in task.metrics}
    if ka == kb == 1:
        p_values = swap_test(task, gold, a[0], b[0], observed, resamples, seed)
    else:
        p_values = seed_test(full, ka, kb, resamples, seed)
    tail = (1 - confidence) / 2
    result = {}
    for name in task.metrics:
        kept = differences[name][~np.isnan(differences[name])]
        low, high = (np.quantile(kept, [tail, 1 - tail]) if len(kept) else (np.nan, np.nan))
        p = p_values[name]
        result[name] = Difference(float(full[name][:ka].mean()), float(full[name][ka:].mean()),
                                  float(observed[name]), float(low), float(high),
                                  None if p is None or np.isnan(observed[name]) else float(p))
    return result
