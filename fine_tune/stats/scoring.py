"""Every metric of a task on many resamples at once, vectorised: `metrics_of` gives
{metric: [models, resamples]}. Classification: each row is a cell of a joint confusion
matrix (gold, then each model's prediction), the confusion matrices of a chunk of
resamples come from one count (np.bincount) over their rows (`Confusions`), and accuracy,
F1, macro-F1 and MCC are computed from them as sklearn computes them
(`confusion_metrics`). STS-B: Pearson from weighted sums of the scores, Spearman from
average ranks under per-resample row weights (`Scores`, `Ranker`). Each metric is computed
again on each resample, from scratch, never averaged from per-row values.
"""
import math

import numpy as np

import fine_tune.stats.draws as draws  # (draws.ELEMENTS_PER_CHUNK read at each use: one setting)

# Most joint confusion cells counted at once (models are packed into groups whose gold x
# predictions cells stay within this, and within the number of rows).
MAX_CELLS = 4096


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


class Confusions:
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
            step = max(1, draws.ELEMENTS_PER_CHUNK // width)  # (bounds the counts' memory too)
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


class Ranker:
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


def correlation(sxy, sxx, syy):
    """Pearson's r from centred sums, NaN where a side is constant (as pandas)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)


def pearson_of_means(g, gg, p, pp, pg):
    """Pearson's r from the means of g, g², p, p² and p·g (NaN where one side is constant:
    a variance within rounding of 0 is taken as 0)."""
    var_g, var_p, cov = gg - g * g, pp - p * p, pg - p * g
    var_g = np.where(var_g <= 1e-13 * gg, 0.0, var_g)
    var_p = np.where(var_p <= 1e-13 * pp, 0.0, var_p)
    return correlation(cov, var_g, var_p)


class Scores:
    """Pearson and Spearman of each model against the gold scores on many resamples, from
    how many times each resample drew each row (integer weights [resamples, rows])."""

    def __init__(self, gold: np.ndarray, models: list[np.ndarray]):
        self.n = len(gold)
        # Centred (Pearson does not move with a shift) so that the sums lose no precision;
        # one shift for all models, so that a prediction keeps its value in any model.
        self.gold = gold.astype(np.float64) - gold.astype(np.float64).mean()
        centre = np.mean([m.astype(np.float64).mean() for m in models])
        self.models = [m.astype(np.float64) - centre for m in models]
        self.gold_ranker = Ranker(self.gold)
        self.rankers = [Ranker(m) for m in self.models]
        g = self.gold
        self.features = np.stack([g, g * g] + [f for p in self.models for f in (p, p * p, p * g)],
                                 axis=1)

    def metrics(self, weights: np.ndarray) -> dict:
        """{metric: [models, resamples]}."""
        real = weights.astype(np.float64)
        g, gg, *sums = (real @ self.features / self.n).T
        pearson = [pearson_of_means(g, gg, *sums[3 * m:3 * m + 3])
                   for m in range(len(self.models))]
        middle = (self.n + 1) / 2  # the mean rank in every resample
        gold_ranks = self.gold_ranker.ranks(weights) - middle
        weighted_gold = real * gold_ranks
        gold_spread = np.einsum("ij,ij->i", weighted_gold, gold_ranks)
        spearman = []
        for ranker in self.rankers:
            ranks = ranker.ranks(weights) - middle
            spearman.append(correlation(np.einsum("ij,ij->i", weighted_gold, ranks), gold_spread,
                                         np.einsum("ij,ij,ij->i", real, ranks, ranks)))
        return {"pearson": np.stack(pearson), "spearman": np.stack(spearman)}


def _row_weights(picked: np.ndarray, rows: int) -> np.ndarray:
    """[resamples, rows]: how many times each resample (picked: [resamples, rows]) drew
    each row."""
    size = len(picked)
    flat = (picked + (np.arange(size, dtype=np.intp) * rows)[:, None]).ravel()
    return np.bincount(flat, minlength=size * rows).reshape(size, rows)


def metrics_of(task, scorer, picked: np.ndarray | None, rows: int) -> dict:
    """{metric: [models, resamples]} on the resampled rows (None: all rows once)."""
    if task.regression:
        weights = (np.ones((1, rows), dtype=np.intp) if picked is None
                   else _row_weights(picked, rows))
        return scorer.metrics(weights)
    if picked is None:
        picked = np.arange(rows)[None]
    counts = scorer.counts(picked)
    return {name: confusion_metrics(name, counts) for name in task.metrics}
