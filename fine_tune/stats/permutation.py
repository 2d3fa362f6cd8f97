"""The p-values of a comparison, two-sided permutation tests. One model against one other
(`swap_test`): each permutation swaps A's and B's predictions of each row with probability
1/2, and the metrics of the swapped models are updated from the rows where the two
differ. Seed groups (`seed_test`): the experiments of both groups split into two groups
of the same sizes, every way or random ways (draws.seed_splits), with the seeds as the
unit. `p_value_test` says in words which test a comparison runs.
"""
import math

import numpy as np

from fine_tune.stats.draws import draw_swaps, seed_splits
from fine_tune.stats.scoring import Ranker, Scores, confusion_metrics, correlation, pearson_of_means

# A permuted |difference| within this of the observed one counts as reaching it (the same
# difference computed in another order may differ in its last bits).
TOLERANCE = 1e-12


def swap_test(task, gold, a, b, observed: dict, resamples: int, seed: int) -> dict:
    """p-values of the paired permutation test of one model against one other."""
    differ = np.flatnonzero(a != b)
    if len(differ) == 0:  # every permutation gives the observed difference (0)
        return {name: 1.0 for name in task.metrics}
    reached = {name: 0 for name in task.metrics}
    if task.regression:
        n, scores = len(gold), Scores(gold, [a, b])
        pa, pb, g = scores.models[0][differ], scores.models[1][differ], scores.gold[differ]
        change = np.stack([pb - pa, pb * pb - pa * pa, (pb - pa) * g], axis=1) / n
        g_mean, gg_mean, *means = np.ones(n) @ scores.features / n
        means = np.array(means).reshape(2, 3)  # A's and B's means of p, p², p·g
        middle = (n + 1) / 2
        gold_ranks = scores.gold_ranker.ranks(np.ones((1, n), dtype=np.intp))[0] - middle
        gold_spread = gold_ranks @ gold_ranks
        both = Ranker(np.concatenate([scores.models[0], scores.models[1]]))
        all_through, all_totals = both.counts(np.ones((1, 2 * n), dtype=np.intp))
    else:
        k = task.num_labels
        cells_a, cells_b = gold.astype(np.intp) * k + a, gold.astype(np.intp) * k + b
        change = (np.eye(k * k)[cells_b[differ]] - np.eye(k * k)[cells_a[differ]])
        counts_a = np.bincount(cells_a, minlength=k * k).astype(np.float64)
        counts_b = np.bincount(cells_b, minlength=k * k).astype(np.float64)
    for swaps in draw_swaps(len(differ), resamples, seed):
        moved = swaps.astype(np.float64) @ change
        if task.regression:
            # A' takes B's prediction where swapped, B' gives it up: their sums move oppositely.
            pearson = [pearson_of_means(g_mean, gg_mean, *(means[side] + sign * moved).T)
                       for side, sign in ((0, 1), (1, -1))]
            swapped = np.zeros((len(swaps), n), dtype=bool)
            swapped[:, differ] = swaps
            # Ranks among A''s values (A's where not swapped, B's where swapped) and among
            # B''s (the others): the two weightings add up to every value once.
            through, totals = both.counts(np.concatenate([~swapped, swapped], axis=1))
            ranks_a = both.ranks(counts=(through, totals))
            ranks_b = both.ranks(counts=(all_through - through, all_totals - totals))
            spearman = []
            for ranks, take_b in ((ranks_a, swapped), (ranks_b, ~swapped)):
                mine = np.where(take_b, ranks[:, n:], ranks[:, :n]) - middle
                spearman.append(correlation(mine @ gold_ranks, gold_spread,
                                             np.einsum("ij,ij->i", mine, mine)))
            values = {"pearson": pearson, "spearman": spearman}
            differences = {name: values[name][0] - values[name][1] for name in task.metrics}
        else:
            a_counts = (counts_a + moved).reshape(-1, k, k)
            b_counts = (counts_b - moved).reshape(-1, k, k)
            differences = {name: (confusion_metrics(name, a_counts)
                                  - confusion_metrics(name, b_counts)) for name in task.metrics}
        for name, difference in differences.items():
            target = abs(observed[name]) - TOLERANCE
            reached[name] += int(np.count_nonzero(np.abs(difference) >= target))
    return {name: (1 + reached[name]) / (1 + resamples) for name in task.metrics}


def seed_test(per_model: dict, seeds_a: int, seeds_b: int, resamples: int, seed: int) -> dict:
    """p-values of the permutation test of the seed groups (experiments as the unit)."""
    chosen, exact = seed_splits(seeds_a, seeds_b, resamples, seed)
    p_values = {}
    for name, values in per_model.items():
        observed = values[:seeds_a].mean() - values[seeds_a:].mean()
        if np.isnan(observed):
            p_values[name] = None
            continue
        differences = (chosen @ values) / seeds_a - (~chosen @ values) / seeds_b
        reached = int(np.count_nonzero(np.abs(differences) >= abs(observed) - TOLERANCE))
        p_values[name] = reached / len(chosen) if exact else (1 + reached) / (1 + len(chosen))
    return p_values


def p_value_test(seeds_a: int, seeds_b: int, resamples: int) -> str:
    """In words, which permutation test paired_bootstrap runs for groups of these sizes."""
    if seeds_a == seeds_b == 1:
        return (f"two-sided paired permutation test: {resamples} random swaps of A's and B's "
                "prediction of each row")
    splits = math.comb(seeds_a + seeds_b, seeds_a)
    if splits <= resamples:  # (equal groups: the mirrored split reaches the same |difference|)
        how, smallest = f"all {splits} splits", (2 if seeds_a == seeds_b else 1) / splits
    else:
        how, smallest = f"{resamples} random splits of {splits}", 1 / (1 + resamples)
    return (f"two-sided permutation test of the seed groups: the {seeds_a + seeds_b} experiments "
            f"split into groups of {seeds_a} and {seeds_b}, {how}, on all rows (smallest "
            f"possible p: {smallest:.3g})")
