"""Is the difference between two experiments real? `python -m fine_tune.compare A B`.

    python -m fine_tune.compare LAD PKD                       # MNLI, dev_matched, best checkpoints
    python -m fine_tune.compare LAD PKD --split dev_mismatched --ckpt 48000
    python -m fine_tune.compare LAD_s1,LAD_s2,LAD_s3 PKD_s1,PKD_s2,PKD_s3
    python -m fine_tune.compare LAD_s1 PKD_s1 --seed_groups   # each one's whole seed group

For every metric of the task it prints A's score, B's score, the difference A - B, an
interval for that difference and a p-value, computed from the per-row predictions that
evaluation keeps (eval_predictions/<split>/ in each experiment folder).

Paired: both experiments are scored on the same rows (checked: the rows' fingerprints must
be equal), so the comparison is made row by row. Much of the noise in a score comes from
which rows happen to be in the dev set: an easy or a hard row is easy or hard for both
models, and pairing cancels that part out. That is why a paired interval is much narrower
than two separate intervals would suggest.

Interval (paired bootstrap): the resampling unit is the row. Each of --resamples resamples
draws as many rows as the split has, with replacement, the same rows for A and for B; every
metric is computed again on the resample, from scratch (F1, MCC, macro-F1, Pearson and
Spearman are not means of per-row values, so they are recomputed, never averaged), and the
difference is recorded. The interval is the central --confidence share of those
differences (percentile bootstrap): had the dev set been another draw of rows from the same
source, the difference would very likely have fallen in it. An interval that excludes 0
says the sign of the difference is not an accident of the rows.

p-value (paired permutation test), one experiment on each side: for each of --resamples
permutations, A's and B's predictions of each row are swapped with probability 1/2 and the
difference is computed again. If the two models were interchangeable, the observed
difference would be as typical as these; p = (1 + number of permuted |differences| >= the
observed |difference|) / (1 + permutations), two-sided. It says how surprising the
difference is for these two trained models on these rows; it does not say whether another
training seed would give the same: for that, compare seed groups.

Seed groups (A and B each a comma-separated list of experiments, or --seed_groups): A's
score is the mean over A's seeds, B's the mean over B's, and the interval comes from a
hierarchical bootstrap: each resample draws rows (the same rows for every model: still
paired) and, within each group, as many seeds as the group has, with replacement; each
drawn model is scored on the resampled rows and the groups' means are subtracted. The
interval thus holds both the spread between seeds and the noise of the rows (with 2 or 3
seeds the seed part is itself a rough estimate). The p-value of groups tests the method,
with the seeds as the unit: the experiments of both groups are split into two groups of
the same sizes in every possible way (or, when there are more ways than --resamples, in
--resamples random ways), the mean difference is computed for each split on all rows, and
p is the share of splits whose |difference| is >= the observed one (the observed split
included). Few seeds give few splits: with 3 seeds against 3 there are 20, and the
smallest possible p is 2/20 = 0.1 (the split with the groups exchanged is as extreme), so
three seeds a side can never reach p < 0.05 by this test; the interval is then the more
informative result.

The same --seed gives the same numbers on every run. The work is vectorised numpy (the
comparison needs no torch): each row becomes a cell of a confusion matrix, the confusion
matrices of a chunk of resamples come from one count (np.bincount) over their rows, and
the metrics are computed from them; for STS-B, from weighted sums and ranks.
"""
import argparse
import itertools
import json
import math
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fine_tune.cli import MODELS, new_parser, seed_int
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import LABELED_SPLITS, TRAINABLE_TASKS, get_task
from fine_tune.results import dev_split, load_predictions, require_best

# Resamples x rows held in memory at once (about 20 MB per array of them).
ELEMENTS_PER_CHUNK = 2_500_000
# Most joint confusion cells counted at once (models are packed into groups whose gold x
# predictions cells stay within this, and within the number of rows).
MAX_CELLS = 4096
# A permuted |difference| within this of the observed one counts as reaching it (the same
# difference computed in another order may differ in its last bits).
TOLERANCE = 1e-12


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


# ---- random draws (public, so that a test can replay exactly the same resamples) --------

def chunk_sizes(resamples: int, rows: int) -> list[int]:
    """How many resamples are drawn and scored at once: rows x chunk stays near
    ELEMENTS_PER_CHUNK."""
    size = max(1, min(resamples, ELEMENTS_PER_CHUNK // max(rows, 1)))
    return [min(size, resamples - start) for start in range(0, resamples, size)]


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, stream])))


def draw_resamples(rows: int, resamples: int, seed: int = 0, seeds_a: int = 1, seeds_b: int = 1):
    """The bootstrap resamples, chunk by chunk (chunk_sizes): yields (picked rows: an int
    array [chunk, rows] of row numbers drawn with replacement; A's drawn seeds [chunk,
    seeds_a] and B's [chunk, seeds_b], indices into each group drawn with replacement).
    Rows and seeds come from separate streams, so the rows drawn do not depend on the group
    sizes."""
    picks, a_seeds, b_seeds = _generator(seed, 0), _generator(seed, 1), _generator(seed, 2)
    for size in chunk_sizes(resamples, rows):
        yield (picks.integers(0, rows, size=(size, rows), dtype=np.intp),
               a_seeds.integers(0, seeds_a, size=(size, seeds_a)),
               b_seeds.integers(0, seeds_b, size=(size, seeds_b)))


def draw_swaps(rows: int, resamples: int, seed: int = 0):
    """The permutations, chunk by chunk: yields bool arrays [chunk, rows], True where A's and
    B's predictions of a row are swapped (probability 1/2 each, independently). `rows` are
    the rows where A and B predict differently (a swap elsewhere changes nothing)."""
    generator = _generator(seed, 3)
    width = 8 * math.ceil(rows / 64)  # bytes per permutation: whole 64-bit draws
    for size in chunk_sizes(resamples, rows):
        raw = np.frombuffer(generator.bytes(size * width), np.uint8).reshape(size, width)
        yield np.unpackbits(raw, axis=1, count=rows).view(bool)


# ---- metrics of many resamples at once ------------------------------------------------------

def confusion_metrics(name: str, counts: np.ndarray) -> np.ndarray:
    """A metric from confusion matrices counts[..., gold, predicted], as sklearn computes it
    (macro-F1 over the classes present in gold or predictions, F1 of class 1 with
    zero_division=0, MCC 0 where undefined)."""
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    true, predicted = counts.sum(axis=-1), counts.sum(axis=-2)
    total = true.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "accuracy":
            return tp.sum(axis=-1) / total
        if name in ("f1", "macro_f1"):
            denominator = true + predicted
            f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
            if name == "f1":
                return f1[..., 1]
            return f1.sum(axis=-1) / (denominator > 0).sum(axis=-1)
        if name == "mcc":
            covariance = tp.sum(axis=-1) * total - (true * predicted).sum(axis=-1)
            spread = (total ** 2 - (predicted * predicted).sum(axis=-1)) * \
                     (total ** 2 - (true * true).sum(axis=-1))
            return np.where(spread == 0, 0.0, covariance / np.sqrt(spread))
    raise ValueError(f"{name} is not a classification metric")


class _Confusions:
    """Each model's confusion matrices on many resamples: every row is one joint cell
    (gold, then each model's prediction) of a pack of models, and a resample's counts of
    those cells are one np.bincount; each model's confusion matrix sums the others out."""

    def __init__(self, classes: int, gold: np.ndarray, models: list[np.ndarray]):
        self.k = classes
        # Few cells per row at most, so that summing a pack's cells out costs no more than
        # counting them.
        cells = min(MAX_CELLS, max(len(gold), classes ** 2))
        per_pack = max(1, int(math.log(cells) / math.log(classes) + 1e-9) - 1)
        self.packs = []
        for start in range(0, len(models), per_pack):
            pack = models[start:start + per_pack]
            cells = gold.astype(np.intp)
            for predicted in pack:
                cells = cells * classes + predicted.astype(np.intp)
            self.packs.append((len(pack), cells))

    def counts(self, picked: np.ndarray) -> np.ndarray:
        """[models, resamples, k, k] confusion counts of the resamples' rows (picked:
        [resamples, rows] row numbers)."""
        size, k = len(picked), self.k
        out = np.empty((sum(models for models, _ in self.packs), size, k, k), dtype=np.intp)
        first = 0
        for models, cells in self.packs:
            width = k ** (models + 1)
            step = max(1, ELEMENTS_PER_CHUNK // width)  # (bounds the counts' memory too)
            for start in range(0, size, step):
                block = picked[start:start + step]
                joint = np.take(cells, block, mode="clip")
                joint += (np.arange(len(block), dtype=np.intp) * width)[:, None]
                table = np.bincount(joint.ravel(), minlength=len(block) * width)
                table = table.reshape((len(block),) + (k,) * (models + 1))
                for j in range(models):  # model j's confusion matrices: the others summed out
                    others = tuple(2 + i for i in range(models) if i != j)
                    out[first + j, start:start + len(block)] = \
                        table.sum(axis=others) if others else table
            first += models
        return out


class _Ranker:
    """Average ranks (1-based, ties averaged as pandas' rank does) of fixed values, each
    value counted with an integer weight per resample (how often the resample drew its
    row). Arrays are [resamples, values]."""

    def __init__(self, values: np.ndarray):
        self.order = np.argsort(values, kind="stable")
        ordered = values[self.order]
        new = np.r_[True, ordered[1:] != ordered[:-1]]
        # last position of each tie group in value order (None: no ties)
        ends = np.r_[np.flatnonzero(new)[1:], len(values)] - 1
        self.ends = ends if len(ends) < len(values) else None
        self.group = np.empty(len(values), dtype=np.intp)
        self.group[self.order] = np.cumsum(new) - 1  # each value's tie group

    def counts(self, weights: np.ndarray):
        """Per resample and tie group (in value order), the total weight of the values up
        to and including the group, and the group's own: integer arrays [resamples,
        groups] (weights: integers or bools [resamples, values])."""
        ordered = np.take(weights, self.order, axis=1)
        through = np.cumsum(ordered, axis=1)  # exact: integers
        if self.ends is None:
            return through, ordered
        through = np.take(through, self.ends, axis=1)
        return through, np.diff(through, axis=1, prepend=0)

    def ranks(self, weights: np.ndarray = None, counts=None) -> np.ndarray:
        """[resamples, values] average ranks among the weighted values: a tie group of
        total weight t after s smaller values has rank s + (t + 1) / 2 (from `counts`
        when given)."""
        through, totals = self.counts(weights) if counts is None else counts
        average = totals.astype(np.float64)  # through - (totals - 1) / 2, in place
        average -= 1
        average *= -0.5
        average += through
        return np.take(average, self.group, axis=1)


def _correlation(sxy, sxx, syy):
    """Pearson's r from centred sums, NaN where a side is constant (as pandas)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)


def _pearson_of_means(g, gg, p, pp, pg):
    """Pearson's r from the means of g, g², p, p² and p·g (NaN where one side is constant:
    a variance within rounding of 0 is taken as 0)."""
    var_g, var_p, cov = gg - g * g, pp - p * p, pg - p * g
    var_g = np.where(var_g <= 1e-13 * gg, 0.0, var_g)
    var_p = np.where(var_p <= 1e-13 * pp, 0.0, var_p)
    return _correlation(cov, var_g, var_p)


class _Scores:
    """Pearson and Spearman of each model against the gold scores on many resamples, from
    how many times each resample drew each row (integer weights [resamples, rows])."""

    def __init__(self, gold: np.ndarray, models: list[np.ndarray]):
        self.n = len(gold)
        # Centred (Pearson does not move with a shift) so that the sums lose no precision;
        # one shift for all models, so that a prediction keeps its value in any model.
        self.gold = gold.astype(np.float64) - gold.astype(np.float64).mean()
        centre = np.mean([m.astype(np.float64).mean() for m in models])
        self.models = [m.astype(np.float64) - centre for m in models]
        self.gold_ranker = _Ranker(self.gold)
        self.rankers = [_Ranker(m) for m in self.models]
        g = self.gold
        self.features = np.stack([g, g * g] + [f for p in self.models for f in (p, p * p, p * g)],
                                 axis=1)

    def metrics(self, weights: np.ndarray) -> dict:
        """{metric: [models, resamples]}."""
        real = weights.astype(np.float64)
        g, gg, *sums = (real @ self.features / self.n).T
        pearson = [_pearson_of_means(g, gg, *sums[3 * m:3 * m + 3])
                   for m in range(len(self.models))]
        middle = (self.n + 1) / 2  # the mean rank in every resample
        gold_ranks = self.gold_ranker.ranks(weights) - middle
        weighted_gold = real * gold_ranks
        gold_spread = np.einsum("ij,ij->i", weighted_gold, gold_ranks)
        spearman = []
        for ranker in self.rankers:
            ranks = ranker.ranks(weights) - middle
            spearman.append(_correlation(np.einsum("ij,ij->i", weighted_gold, ranks), gold_spread,
                                         np.einsum("ij,ij,ij->i", real, ranks, ranks)))
        return {"pearson": np.stack(pearson), "spearman": np.stack(spearman)}


def _row_weights(picked: np.ndarray, rows: int) -> np.ndarray:
    """[resamples, rows]: how many times each resample (picked: [resamples, rows]) drew
    each row."""
    size = len(picked)
    flat = (picked + (np.arange(size, dtype=np.intp) * rows)[:, None]).ravel()
    return np.bincount(flat, minlength=size * rows).reshape(size, rows)


def _metrics_of(task, scorer, picked: np.ndarray | None, rows: int) -> dict:
    """{metric: [models, resamples]} on the resampled rows (None: all rows once)."""
    if task.regression:
        weights = (np.ones((1, rows), dtype=np.intp) if picked is None
                   else _row_weights(picked, rows))
        return scorer.metrics(weights)
    if picked is None:
        picked = np.arange(rows)[None]
    counts = scorer.counts(picked)
    return {name: confusion_metrics(name, counts) for name in task.metrics}


def _group_means(values: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """values [seeds, resamples], drawn [resamples, draws] -> each resample's mean over
    its drawn seeds."""
    if values.shape[0] == 1:
        return values[0]
    return np.take_along_axis(values.T, drawn, axis=1).mean(axis=1)


def _swap_test(task, gold, a, b, observed: dict, resamples: int, seed: int) -> dict:
    """p-values of the paired permutation test of one model against one other."""
    differ = np.flatnonzero(a != b)
    if len(differ) == 0:  # every permutation gives the observed difference (0)
        return {name: 1.0 for name in task.metrics}
    reached = {name: 0 for name in task.metrics}
    if task.regression:
        n, scores = len(gold), _Scores(gold, [a, b])
        pa, pb, g = scores.models[0][differ], scores.models[1][differ], scores.gold[differ]
        change = np.stack([pb - pa, pb * pb - pa * pa, (pb - pa) * g], axis=1) / n
        g_mean, gg_mean, *means = np.ones(n) @ scores.features / n
        means = np.array(means).reshape(2, 3)  # A's and B's means of p, p², p·g
        middle = (n + 1) / 2
        gold_ranks = scores.gold_ranker.ranks(np.ones((1, n), dtype=np.intp))[0] - middle
        gold_spread = gold_ranks @ gold_ranks
        both = _Ranker(np.concatenate([scores.models[0], scores.models[1]]))
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
            pearson = [_pearson_of_means(g_mean, gg_mean, *(means[side] + sign * moved).T)
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
                spearman.append(_correlation(mine @ gold_ranks, gold_spread,
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


def seed_splits(seeds_a: int, seeds_b: int, resamples: int, seed: int = 0):
    """The splits of seeds_a + seeds_b experiments into groups of seeds_a and seeds_b that
    the seed permutation test uses: (bool array [splits, all], True: in A; exact: whether it
    is every split, the observed one included, rather than random ones)."""
    total = seeds_a + seeds_b
    if math.comb(total, seeds_a) <= resamples:
        chosen = np.zeros((math.comb(total, seeds_a), total), dtype=bool)
        for row, members in enumerate(itertools.combinations(range(total), seeds_a)):
            chosen[row, list(members)] = True
        return chosen, True
    order = np.argsort(_generator(seed, 4).random((resamples, total)), axis=1)
    chosen = np.zeros((resamples, total), dtype=bool)
    np.put_along_axis(chosen, order[:, :seeds_a], True, axis=1)
    return chosen, False


def _seed_test(per_model: dict, seeds_a: int, seeds_b: int, resamples: int, seed: int) -> dict:
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


def paired_bootstrap(task, gold, a: list[np.ndarray], b: list[np.ndarray], resamples=10000,
                     seed=0, confidence=0.95) -> dict[str, Difference]:
    """{metric: Difference} of A against B on the same rows (see the module's docstring).

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
        scorer = _Scores(gold, models)
    else:
        k = task.num_labels
        for values in [gold] + models:
            if values.min() < 0 or values.max() >= k:
                raise ValueError(f"label ids must be in [0, {k})")
        scorer = _Confusions(k, gold, models)
    ka, kb = len(a), len(b)
    full = {name: values[:, 0] for name, values in _metrics_of(task, scorer, None, rows).items()}
    differences = {name: np.empty(resamples) for name in task.metrics}
    done = 0
    for picked, seeds_a, seeds_b in draw_resamples(rows, resamples, seed, ka, kb):
        values = _metrics_of(task, scorer, picked, rows)
        for name in task.metrics:
            differences[name][done:done + len(picked)] = (
                _group_means(values[name][:ka], seeds_a) - _group_means(values[name][ka:], seeds_b))
        done += len(picked)
    observed = {name: full[name][:ka].mean() - full[name][ka:].mean() for name in task.metrics}
    if ka == kb == 1:
        p_values = _swap_test(task, gold, a[0], b[0], observed, resamples, seed)
    else:
        p_values = _seed_test(full, ka, kb, resamples, seed)
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


# ---- experiments ----------------------------------------------------------------------------

def _folder(exp_dir, name: str, model: str, task, side: str = "A or B") -> Path:
    """The experiment's folder; one line naming the experiments there when it is not one
    (`side`: where the name was given)."""
    folder = Path(exp_dir) / f"{name}_{model}_{task.name}"
    if name and "/" not in name and (folder / "config.json").is_file():
        return folder
    # (imported here: fine_tune.experiment brings in torch, which a comparison never needs)
    from fine_tune.experiment import Experiment
    Experiment(exp_dir, name, model, task.name).require(flag=side)
    raise UserError(f"experiment {name!r} not found in --exp_dir {exp_dir}")  # (not reached)


def seed_group(exp_dir, model: str, task_name: str, name: str, side: str = "A or B") -> list[str]:
    """The experiments of `name`'s seed group as `python -m fine_tune.report` forms it (same
    task, method and settings but those report.NOT_A_DIFFERENCE lists), in folder order."""
    from fine_tune.report import experiment_row  # (imports torch, through fine_tune.io)
    task = get_task(task_name)
    folder = _folder(exp_dir, name, model, task, side)
    mine = experiment_row(folder, None)
    if mine is None:
        raise UserError(f"--seed_groups: {folder} has no readable config.json and "
                        "model_config.json, so its seed group cannot be formed: name the "
                        "experiments of each side separated by commas instead")
    suffix = f"_{model}_{task.name}"
    members = [other.name[:-len(suffix)] for other in sorted(Path(exp_dir).iterdir())
               if other.is_dir() and other.name.endswith(suffix)
               and (row := experiment_row(other, None)) is not None and row["_key"] == mine["_key"]]
    return members


def _load(exp_dir, model: str, task, name: str, split: str, ckpt, side: str) -> dict:
    folder = _folder(exp_dir, name, model, task, side)
    metric = get_task(task.trained_as).metrics[0]
    if ckpt == "best":
        best = require_best(folder, name, task, "--ckpt best")  # (or one line saying why not)
        step, amp, chosen = best.step, best.amp, f"the best {metric} on {best.split}"
    else:
        step, amp, chosen = int(ckpt), None, "--ckpt"
    try:
        gold, predicted, amp, fingerprint = load_predictions(folder, task, split, step, amp)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise UserError(f"{folder}/eval_predictions/{split} is damaged ({error}): evaluate "
                        f"{name} again with run_fine_tune_eval.py --dataset {split}") from None
    if predicted.shape != gold.shape:
        raise UserError(f"{folder}/eval_predictions/{split}/{step}-{amp}.npy has "
                        f"{len(predicted)} rows, the split {len(gold)}: evaluate {name} again "
                        f"with run_fine_tune_eval.py --dataset {split} --ckpt {step}")
    return {"experiment": name, "step": step, "amp": amp, "chosen": chosen, "gold": gold,
            "predicted": predicted, "fingerprint": fingerprint}


def compare_experiments(exp_dir, model, task_name, a_names: list[str], b_names: list[str],
                        split=None, ckpt="best", resamples=10000, seed=0,
                        confidence=0.95) -> tuple[dict[str, Difference], dict]:
    """Load the predictions of each experiment of A and of B (each at its own best
    checkpoint, in the precision that made it best, or all at step `ckpt`) on `split`
    (default: the task's dev split) and compare them with paired_bootstrap. Returns
    ({metric: Difference}, info): info names the task, split, rows, fingerprint, the
    p-value's test, and per experiment its step, amp and how the step was chosen."""
    task = get_task(task_name)
    split = split or dev_split(task)
    if split not in task.labelled_splits():
        raise UserError(f"--split {split}: --task {task.name} has no labelled split {split!r} "
                        f"(its: {', '.join(task.labelled_splits())})")
    for side, names in (("A", a_names), ("B", b_names)):
        if not names:
            raise UserError(f"{side} names no experiment")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"{side} names {', '.join(twice)} more than once")
    loaded = {side.lower(): [_load(exp_dir, model, task, name, split, ckpt, side) for name in names]
              for side, names in (("A", a_names), ("B", b_names))}
    first = loaded["a"][0]
    for entry in loaded["a"][1:] + loaded["b"]:
        if (entry["fingerprint"] != first["fingerprint"]
                or entry["gold"].shape != first["gold"].shape):
            raise UserError(f"{first['experiment']} and {entry['experiment']} were scored on "
                            f"different rows of {split} (fingerprints {first['fingerprint']} and "
                            f"{entry['fingerprint']}): evaluate both on the same data file with "
                            f"run_fine_tune_eval.py --dataset {split}")
    started = time.perf_counter()
    differences = paired_bootstrap(task, first["gold"], [e["predicted"] for e in loaded["a"]],
                                   [e["predicted"] for e in loaded["b"]], resamples, seed,
                                   confidence)
    seconds = time.perf_counter() - started
    keep = ("experiment", "step", "amp", "chosen")
    info = {"task": task.name, "split": split, "rows": len(first["gold"]),
            "fingerprint": first["fingerprint"], "resamples": resamples, "seed": seed,
            "confidence": confidence, "seconds": seconds,
            "p_value_test": p_value_test(len(a_names), len(b_names), resamples),
            "a": [{key: e[key] for key in keep} for e in loaded["a"]],
            "b": [{key: e[key] for key in keep} for e in loaded["b"]]}
    return differences, info


# ---- command line ---------------------------------------------------------------------------

def _number(value: float, signed: bool = False) -> str:
    return "nan" if value != value else (f"{value:+.4f}" if signed else f"{value:.4f}")


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}".rstrip("0")
    return f"{value:.1e}" if text == "0." else text + "0" * text.endswith(".")


def _side(label: str, entries: list) -> list[str]:
    lines = [f"  {label} = " + ("" if len(entries) == 1 else f"mean of {len(entries)} seeds:")]
    for entry in entries:
        text = (f"{entry['experiment']}: model-{entry['step']}.pt, {entry['amp']} "
                f"({entry['chosen']})")
        if len(entries) == 1:
            lines[0] += text
        else:
            lines.append(f"      {text}")
    return lines


def render(differences: dict, info: dict) -> str:
    """The table and the one-sentence summary that the command prints."""
    percent = f"{100 * info['confidence']:g}%"
    lines = [f"{info['task']} {info['split']}: {info['rows']} rows (fingerprint "
             f"{info['fingerprint']}), compared row by row"]
    lines += _side("A", info["a"]) + _side("B", info["b"]) + [""]
    header = ["metric", "A", "B", "A − B", f"{percent} interval", "p"]
    body = [[name, _number(d.a), _number(d.b), _number(d.difference, True),
             f"[{_number(d.low, True)}, {_number(d.high, True)}]", _p(d.p_value)]
            for name, d in differences.items()]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    for row in [header] + body:
        lines.append("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip())
    groups = len(info["a"]) > 1 or len(info["b"]) > 1
    method = (f"Interval: {'hierarchical ' if groups else ''}paired bootstrap over the rows"
              + (" and the seeds within each group" if groups else "")
              + f", {info['resamples']} resamples (--seed {info['seed']}), percentile; "
              f"p: {info['p_value_test']}. Computed in {info['seconds']:.1f} s.")
    lines += [""] + textwrap.wrap(method, width=90, break_on_hyphens=False)
    name, first = next(iter(differences.items()))
    seeds = (f" ({len(info['a'])} vs {len(info['b'])} seeds)" if groups else "")
    p = "" if first.p_value is None else f", p = {_p(first.p_value)}"
    lines.append(f"A − B on {info['split']} {name}: {_number(first.difference, True)} "
                 f"[{_number(first.low)}, {_number(first.high)}]{p}{seeds} over "
                 f"{info['rows']} rows")
    return "\n".join(lines)


def main(args) -> None:
    a_names, b_names = args.a, args.b
    if args.seed_groups:
        if len(a_names) > 1 or len(b_names) > 1:
            raise UserError("--seed_groups takes one experiment per side (each stands for its "
                            "seed group); without it, list the experiments separated by commas")
        a_names = seed_group(args.exp_dir, args.model, args.task, a_names[0], "A")
        b_names = seed_group(args.exp_dir, args.model, args.task, b_names[0], "B")
    differences, info = compare_experiments(args.exp_dir, args.model, args.task, a_names, b_names,
                                            args.split, args.ckpt, args.resamples, args.seed,
                                            args.confidence)
    print(render(differences, info))


def _names(text: str) -> list[str]:
    names = [name for name in text.replace(" ", "").split(",") if name]
    if not names:
        raise argparse.ArgumentTypeError(f"expected experiment names separated by commas, got "
                                         f"{text!r}")
    return names


def _checkpoint(text: str):
    if text == "best":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a step (a number) or 'best', got {text!r}")
    return int(text)


def _resamples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.95), got {text}")
    return value


def build_parser():
    parser = new_parser(__doc__, prog="python -m fine_tune.compare")
    parser.add_argument("a", type=_names, metavar="A",
                        help="experiment(s) A: a name (its --experiment), or several separated by "
                             "commas, one per seed, whose mean is compared")
    parser.add_argument("b", type=_names, metavar="B", help="experiment(s) B, likewise")
    parser.add_argument("--split", choices=LABELED_SPLITS, default=None,
                        help="labelled split whose per-row predictions are compared (default: "
                             "the task's dev split; MNLI: dev_matched)")
    parser.add_argument("--ckpt", type=_checkpoint, default="best", metavar="STEP|best",
                        help="checkpoint of every experiment: 'best' takes each one's best "
                             "checkpoint on the task's dev split (by its first metric) in the "
                             "precision that made it best; a STEP takes model-STEP.pt's fp32 "
                             "predictions where there are fp32 and bf16 ones")
    parser.add_argument("--task", choices=TRAINABLE_TASKS, default="mnli", help="GLUE task")
    parser.add_argument("--model", choices=MODELS, default="bert", help="model family")
    parser.add_argument("--exp_dir", default="exp", help="folder holding all experiment folders")
    parser.add_argument("--resamples", type=_resamples, default=10000,
                        help="bootstrap resamples, and permutations of the p-value (seed "
                             "groups: every split of the experiments when there are no more "
                             "than this, else this many random ones)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the resamples and permutations (the same seed prints the "
                             "same numbers; default: 0)")
    parser.add_argument("--confidence", type=_confidence, default=0.95,
                        help="coverage of the interval: the central share of the resampled "
                             "differences")
    parser.add_argument("--seed_groups", action="store_true",
                        help="A and B each name one experiment that stands for its seed group as "
                             "python -m fine_tune.report forms them (same task and method, "
                             "config.json equal but for the seed and the settings that do not "
                             "change a run). Groups get the hierarchical bootstrap (rows and "
                             "seeds) and the permutation test of the seeds (all splits of the "
                             "experiments into two groups; 3 seeds against 3 give 20 splits, so "
                             "p >= 0.1), not the row swaps")
    return parser


if __name__ == "__main__":
    run_cli(main, build_parser().parse_args())
