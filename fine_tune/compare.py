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
import textwrap

# Here: the command line (render, main, build_parser). Experiments are loaded and compared by
# fine_tune.comparison, with the statistics of fine_tune.stats; the names of those two that
# were defined here before are re-exported.
from fine_tune.cli import MODELS, new_parser, seed_int
from fine_tune.comparison import compare_experiments, seed_group
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import LABELED_SPLITS, TRAINABLE_TASKS
from fine_tune.stats import (Difference, chunk_sizes, confusion_metrics,  # noqa: F401
                             draw_resamples, draw_swaps, p_value_test, paired_bootstrap,
                             seed_splits)


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
