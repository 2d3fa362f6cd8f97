"""fine_tune.compare: paired bootstrap intervals and permutation p-values of two experiments
(or two seed groups) on the same rows, checked against slow reference loops over the same
resamples with sklearn / pandas, and the command line on experiment folders built by hand
(no training)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from fine_tune import compare
from fine_tune.compare import Difference, draw_resamples, draw_swaps, paired_bootstrap
from fine_tune.glue import get_task
from fine_tune.metrics import METRICS  # (as evaluation computes them)
from fine_tune.stats import draws  # (ELEMENTS_PER_CHUNK is patched)

MNLI, MRPC, COLA, STSB = (get_task(name) for name in ("mnli", "mrpc", "cola", "stsb"))
# sklearn's confusion matrix of a resample with one class only (expected here)
pytestmark = pytest.mark.filterwarnings("ignore:A single label was found")


def score(name, gold, predicted):
    return float(METRICS[name](np.asarray(gold, np.float64) if name in ("pearson", "spearman")
                               else gold,
                               np.asarray(predicted, np.float64) if name in ("pearson", "spearman")
                               else predicted))


def classes(task, n, right, rng):
    """Gold label ids, and a model right on about `right` of the rows."""
    gold = rng.integers(0, task.num_labels, n).astype(np.int8)
    return gold, noisy(task, gold, right, rng)


def noisy(task, gold, right, rng):
    return np.where(rng.random(len(gold)) < right, gold,
                    rng.integers(0, task.num_labels, len(gold))).astype(np.int8)


def scores(n, rng, noise=(1.0, 1.5)):
    """STS-B-like gold scores (with ties: rounded to 0.2) and two models' scores."""
    gold = np.round(rng.uniform(0, 5, n) * 5) / 5
    return (gold.astype(np.float32),
            *[np.round(gold + rng.normal(0, s, n), 1).astype(np.float32) for s in noise])


def reference(task, gold, a, b, resamples, seed, confidence=0.95):
    """The slow bootstrap: a Python loop over the same resamples (rows and seeds), sklearn's
    and pandas' metrics on each resample, the groups' means subtracted."""
    differences = {name: [] for name in task.metrics}
    for picked, seeds_a, seeds_b in draw_resamples(len(gold), resamples, seed, len(a), len(b)):
        for rows, drawn_a, drawn_b in zip(picked, seeds_a, seeds_b):
            for name in task.metrics:
                mean_a = np.mean([score(name, gold[rows], a[s][rows]) for s in drawn_a])
                mean_b = np.mean([score(name, gold[rows], b[s][rows]) for s in drawn_b])
                differences[name].append(mean_a - mean_b)
    tail = (1 - confidence) / 2
    return {name: np.quantile(values, [tail, 1 - tail]) for name, values in differences.items()}


def reference_p(task, gold, a, b, resamples, seed):
    """The slow permutation test: swap A's and B's prediction of the drawn rows, score with
    sklearn / pandas, count the |differences| reaching the observed one."""
    observed = {name: score(name, gold, a) - score(name, gold, b) for name in task.metrics}
    differ = np.flatnonzero(a != b)
    reached = dict.fromkeys(task.metrics, 0)
    for swaps in draw_swaps(len(differ), resamples, seed):
        for swap in swaps:
            rows = differ[swap]
            a2, b2 = a.copy(), b.copy()
            a2[rows], b2[rows] = b[rows], a[rows]
            for name in task.metrics:
                permuted = score(name, gold, a2) - score(name, gold, b2)
                reached[name] += abs(permuted) >= abs(observed[name]) - 1e-12
    return {name: (1 + count) / (1 + resamples) for name, count in reached.items()}


# ---- 1. a model against itself ---------------------------------------------------------------

@pytest.mark.parametrize("task", [MNLI, STSB], ids=["mnli", "stsb"])
def test_a_model_against_itself_differs_by_nothing(task):
    rng = np.random.default_rng(0)
    if task.regression:
        gold, a, _ = scores(300, rng)
    else:
        gold, a = classes(task, 300, 0.7, rng)
    result = paired_bootstrap(task, gold, [a], [a.copy()], resamples=500, seed=1)
    assert set(result) == set(task.metrics)
    for name, d in result.items():
        assert d == Difference(d.a, d.a, 0.0, 0.0, 0.0, 1.0), name
        assert d.a == pytest.approx(score(name, gold, a), abs=1e-12)
    # a seed group against itself too
    group = paired_bootstrap(task, gold, [a, a, a], [a, a, a], resamples=200, seed=1)
    assert all((d.difference, d.low, d.high, d.p_value) == (0, 0, 0, 1) for d in group.values())


# ---- 2. against the slow reference on the same resamples -----------------------------------

CASES = {
    "mrpc-like (f1, accuracy)": (MRPC, 0.75, 0.6),
    "cola-like (mcc)": (COLA, 0.7, 0.55),
    "mnli (accuracy, macro_f1)": (MNLI, 0.7, 0.6),
}


@pytest.mark.parametrize("case", list(CASES) + ["stsb (pearson, spearman)"])
def test_equals_sklearn_and_the_slow_bootstrap_on_the_same_resamples(case):
    rng = np.random.default_rng(len(case))
    if case.startswith("stsb"):
        task = STSB
        gold, a, b = scores(70, rng)
    else:
        task, right_a, right_b = CASES[case]
        gold, a = classes(task, 70, right_a, rng)
        b = noisy(task, gold, right_b, rng)
    result = paired_bootstrap(task, gold, [a], [b], resamples=50, seed=7)
    expected = reference(task, gold, [a], [b], 50, 7)
    expected_p = reference_p(task, gold, a, b, 50, 7)
    for name, d in result.items():
        assert d.a == pytest.approx(score(name, gold, a), abs=1e-12)
        assert d.b == pytest.approx(score(name, gold, b), abs=1e-12)
        assert d.difference == pytest.approx(score(name, gold, a) - score(name, gold, b), abs=1e-12)
        assert [d.low, d.high] == pytest.approx(list(expected[name]), abs=1e-9), name
        assert d.low < d.difference < d.high
        assert d.p_value == pytest.approx(expected_p[name], abs=1e-12), name
        assert 1 / 51 <= d.p_value <= 1


def test_same_seed_same_numbers_other_seed_other_numbers():
    rng = np.random.default_rng(3)
    gold, a = classes(MRPC, 200, 0.8, rng)
    b = noisy(MRPC, gold, 0.7, rng)
    first = paired_bootstrap(MRPC, gold, [a], [b], resamples=300, seed=5)
    assert first == paired_bootstrap(MRPC, gold, [a], [b], resamples=300, seed=5)
    assert first != paired_bootstrap(MRPC, gold, [a], [b], resamples=300, seed=6)
    # the chunking of the resamples (memory) changes nothing
    rows = np.vstack([picked for picked, _, _ in draw_resamples(200, 300, 5)])
    old = draws.ELEMENTS_PER_CHUNK
    try:
        draws.ELEMENTS_PER_CHUNK = 200 * 7
        assert len(draws.chunk_sizes(300, 200)) == 43
        assert (np.vstack([picked for picked, _, _ in draw_resamples(200, 300, 5)]) == rows).all()
        assert paired_bootstrap(MRPC, gold, [a], [b], resamples=300, seed=5) == first
    finally:
        draws.ELEMENTS_PER_CHUNK = old


# ---- 3. F1 and MCC recomputed on each resample, never averaged -----------------------------

def test_f1_and_mcc_are_recomputed_per_resample_not_averaged_over_rows():
    rng = np.random.default_rng(11)
    n = 60
    gold = (rng.random(n) < 0.4).astype(np.int8)
    a = np.where(rng.random(n) < 0.8, gold, 1 - gold).astype(np.int8)
    b = np.where(rng.random(n) < 0.65, gold, 1 - gold).astype(np.int8)
    # Each row's own F1 (1 for a true positive, else 0) and MCC (undefined on one row: 0),
    # averaged, is not the metric of the rows together. (A row's value depends only on its
    # gold and predicted label: sklearn scores each of the four pairs once.)
    alone = {name: {(g, p): score(name, [g], [p]) for g in (0, 1) for p in (0, 1)}
             for name in ("f1", "mcc")}
    assert alone["f1"] == {(0, 0): 0, (0, 1): 0, (1, 0): 0, (1, 1): 1}
    assert set(alone["mcc"].values()) == {0}
    per_model = {name: [np.array([values[g, p] for g, p in zip(gold, model)]) for model in (a, b)]
                 for name, values in alone.items()}
    for name, (of_a, _) in per_model.items():
        assert abs(of_a.mean() - score(name, gold, a)) > 0.1, name
    per_row = {name: of_a - of_b for name, (of_a, of_b) in per_model.items()}
    recomputed = {"f1": [], "mcc": []}
    averaged = {"f1": [], "mcc": []}
    for picked, _, _ in draw_resamples(n, 60, 2):
        for rows in picked:
            for name in recomputed:
                recomputed[name].append(score(name, gold[rows], a[rows]) - score(name, gold[rows], b[rows]))
                averaged[name].append(per_row[name][rows].mean())
    for task, name in ((MRPC, "f1"), (COLA, "mcc")):
        d = paired_bootstrap(task, gold, [a], [b], resamples=60, seed=2)[name]
        right = np.quantile(recomputed[name], [0.025, 0.975])
        wrong = np.quantile(averaged[name], [0.025, 0.975])
        assert [d.low, d.high] == pytest.approx(list(right), abs=1e-9), name
        assert max(abs(d.low - wrong[0]), abs(d.high - wrong[1])) > 0.05, name


# ---- 4. seed groups ----------------------------------------------------------------------

def test_seed_groups_widen_the_interval_and_identical_seeds_change_nothing():
    rng = np.random.default_rng(5)
    gold, a1 = classes(MNLI, 400, 0.7, rng)
    b1 = noisy(MNLI, gold, 0.6, rng)
    # Other seeds of each method: different models, different scores.
    a_seeds = [a1, noisy(MNLI, gold, 0.6, rng), noisy(MNLI, gold, 0.8, rng)]
    b_seeds = [b1, noisy(MNLI, gold, 0.5, rng), noisy(MNLI, gold, 0.65, rng)]
    single = paired_bootstrap(MNLI, gold, [a1], [b1], resamples=1000, seed=3)
    groups = paired_bootstrap(MNLI, gold, a_seeds, b_seeds, resamples=1000, seed=3)
    copies = paired_bootstrap(MNLI, gold, [a1] * 3, [b1] * 3, resamples=1000, seed=3)
    for name in MNLI.metrics:
        s, g, c = single[name], groups[name], copies[name]
        assert g.a == pytest.approx(np.mean([score(name, gold, m) for m in a_seeds]), abs=1e-12)
        assert g.b == pytest.approx(np.mean([score(name, gold, m) for m in b_seeds]), abs=1e-12)
        assert g.high - g.low > 1.3 * (s.high - s.low), name  # the seeds' spread is in it
        # identical seeds: the rows drawn are the same, so the same interval (to rounding:
        # a mean of three equal numbers)
        assert [c.a, c.b, c.difference, c.low, c.high] == \
            pytest.approx([s.a, s.b, s.difference, s.low, s.high], abs=1e-12)
    # the hierarchical bootstrap against the slow loop over the same rows and seeds
    small = slice(0, 60)
    fast = paired_bootstrap(MNLI, gold[small], [m[small] for m in a_seeds],
                            [m[small] for m in b_seeds[:2]], resamples=40, seed=9)
    slow = reference(MNLI, gold[small], [m[small] for m in a_seeds],
                     [m[small] for m in b_seeds[:2]], 40, 9)
    for name in MNLI.metrics:
        assert [fast[name].low, fast[name].high] == pytest.approx(list(slow[name]), abs=1e-9)


def test_seed_group_p_value_permutes_the_seeds():
    rng = np.random.default_rng(8)
    gold, _ = classes(MRPC, 300, 0.7, rng)
    better = [noisy(MRPC, gold, right, rng) for right in (0.9, 0.88, 0.92)]
    worse = [noisy(MRPC, gold, right, rng) for right in (0.5, 0.55, 0.52)]
    result = paired_bootstrap(MRPC, gold, better, worse, resamples=1000, seed=0)
    for name, d in result.items():
        # 20 splits of 6 experiments into 3 + 3; only the observed one and its mirror
        # reach the observed |difference|
        assert d.p_value == pytest.approx(2 / 20), name
        assert d.low > 0
    mixed = paired_bootstrap(MRPC, gold, [better[0], worse[0], better[1]],
                             [worse[1], better[2], worse[2]], resamples=1000, seed=0)
    assert all(d.p_value > 0.3 for d in mixed.values())
    # more splits than permutations: random splits, (1 + count) / (1 + resamples)
    many = paired_bootstrap(MRPC, gold, better + better, worse + worse, resamples=100, seed=0)
    chosen, exact = compare.seed_splits(6, 6, 100, seed=0)
    assert chosen.shape == (100, 12) and (chosen.sum(axis=1) == 6).all() and not exact
    extreme = np.count_nonzero(chosen[:, :6].all(axis=1) | chosen[:, 6:].all(axis=1))
    assert all(d.p_value == pytest.approx((1 + extreme) / 101) for d in many.values())
    assert "all 20 splits" in compare.p_value_test(3, 3, 10000)
    assert "smallest possible p: 0.1" in compare.p_value_test(3, 3, 10000)


def test_bad_input_is_refused():
    gold = np.array([0, 1, 2, 1], dtype=np.int8)
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(MNLI, gold, [gold[:3]], [gold])
    with pytest.raises(ValueError, match="label ids"):
        paired_bootstrap(MNLI, gold, [gold + 1], [gold])
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap(MNLI, gold, [], [gold])


# ---- 5. experiments and the command line ------------------------------------------------

MODEL_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "vocab_size": 100, "max_position_embeddings": 128, "type_vocab_size": 2}


def make_experiment(exp_dir, name, task, gold, predictions, seed=1, method="LAD", split=None,
                    fingerprint="rows-v1", **config):
    """An experiment folder as training and evaluation leave it: config.json,
    model_config.json, results_<split>.csv of the given predictions ({(step, amp): array})
    and their eval_predictions/."""
    split = split or ("dev_matched" if task.name == "mnli" else "dev")
    folder = exp_dir / f"{name}_bert_{task.name}"
    saved = folder / "eval_predictions" / split
    saved.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(
        {"task": task.name, "max_seq_len": 128, "ptrain_ver": "bert-base-uncased",
         "num_class": task.num_labels, "seed": seed, "method": method, "experiment": name,
         "lr": 1e-4} | config))
    (folder / "model_config.json").write_text(json.dumps(MODEL_CONFIG))
    kind = np.float32 if task.regression else np.int8
    np.save(saved / "gold.npy", gold.astype(kind))
    (saved / "rows.json").write_text(json.dumps({"rows": len(gold), "fingerprint": fingerprint}))
    table = []
    for (step, amp), predicted in predictions.items():
        np.save(saved / f"{step}-{amp}.npy", predicted.astype(kind))
        table.append({"step": step, "amp": amp}
                     | {metric: score(metric, gold, predicted) for metric in task.metrics}
                     | {"examples_per_s": 1000.0, "device": "cpu"})
    pd.DataFrame(table).to_csv(folder / f"results_{split}.csv", index=False)
    return folder


def run_compare(*flags):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fine_tune.compare", *map(str, flags)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def assert_clean_failure(result, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """MNLI: LAD and PKD with three seeds each (step 200 best, fp32 and bf16 predictions of
    it), LAD with another learning rate, a run on other rows; RTE: one experiment."""
    exp_dir = tmp_path_factory.mktemp("compare") / "exp"
    rng = np.random.default_rng(21)
    gold = rng.integers(0, 3, 500).astype(np.int8)
    models = {}
    for method, right in (("LAD", 0.8), ("PKD", 0.7)):
        for seed in (1, 2, 3):
            early, best = noisy(MNLI, gold, right - 0.2, rng), noisy(MNLI, gold, right, rng)
            name = f"{method}_s{seed}"
            models[name] = best
            make_experiment(exp_dir, name, MNLI, gold,
                            {(100, "fp32"): early, (200, "fp32"): best,
                             (200, "bf16"): noisy(MNLI, gold, right - 0.1, rng)},
                            seed=seed, method=method)
    make_experiment(exp_dir, "LAD_lr", MNLI, gold, {(200, "fp32"): noisy(MNLI, gold, 0.8, rng)},
                    method="LAD", lr=5e-5)
    make_experiment(exp_dir, "other_rows", MNLI, gold, {(200, "fp32"): noisy(MNLI, gold, 0.8, rng)},
                    method="teacher", fingerprint="rows-v2")
    rte_gold = rng.integers(0, 2, 80).astype(np.int8)
    make_experiment(exp_dir, "rte_only", get_task("rte"), rte_gold,
                    {(50, "fp32"): noisy(get_task("rte"), rte_gold, 0.7, rng)})
    return exp_dir, gold, models


def test_compare_experiments_loads_the_best_checkpoints(experiments):
    exp_dir, gold, models = experiments
    result, info = compare.compare_experiments(exp_dir, "bert", "mnli", ["LAD_s1"], ["PKD_s1"],
                                               resamples=300, seed=0)
    assert info["split"] == "dev_matched" and info["rows"] == 500
    assert info["a"] == [{"experiment": "LAD_s1", "step": 200, "amp": "fp32",
                          "chosen": "the best accuracy on dev_matched"}]
    assert result == paired_bootstrap(MNLI, gold, [models["LAD_s1"]], [models["PKD_s1"]], 300, 0)
    _, info = compare.compare_experiments(exp_dir, "bert", "mnli", ["LAD_s1"], ["PKD_s1"],
                                          ckpt=100, resamples=10)
    assert (info["a"][0]["step"], info["a"][0]["amp"], info["a"][0]["chosen"]) == (100, "fp32", "--ckpt")
    from fine_tune.report import NOT_A_DIFFERENCE
    assert "seed" in NOT_A_DIFFERENCE
    assert compare.seed_group(exp_dir, "bert", "mnli", "LAD_s2") == ["LAD_s1", "LAD_s2", "LAD_s3"]
    assert compare.seed_group(exp_dir, "bert", "mnli", "LAD_lr") == ["LAD_lr"]


@pytest.mark.slow
def test_the_command_prints_the_comparison(experiments):
    exp_dir, gold, models = experiments
    result = run_compare("LAD_s1", "PKD_s1", "--exp_dir", exp_dir, "--resamples", 2000)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    expected = paired_bootstrap(MNLI, gold, [models["LAD_s1"]], [models["PKD_s1"]], 2000, 0)
    accuracy = expected["accuracy"]
    for text in (f"{accuracy.a:.4f}", f"{accuracy.b:.4f}", f"{accuracy.difference:+.4f}",
                 f"[{accuracy.low:+.4f}, {accuracy.high:+.4f}]",
                 f"{expected['macro_f1'].difference:+.4f}",
                 "A = LAD_s1: model-200.pt, fp32 (the best accuracy on dev_matched)",
                 "mnli dev_matched: 500 rows", "2000 random swaps"):
        assert text in out, (text, out)
    assert out.strip().splitlines()[-1] == (
        f"A − B on dev_matched accuracy: {accuracy.difference:+.4f} [{accuracy.low:.4f}, "
        f"{accuracy.high:.4f}], p = {compare._p(accuracy.p_value)} over 500 rows")


def run_main(capsys, *argv):
    """The command in this process (its parser and main, as the entry runs them)."""
    compare.main(compare.build_parser().parse_args([str(a) for a in argv]))
    return capsys.readouterr().out


def test_seed_groups_named_or_listed(experiments, capsys):
    exp_dir, _, _ = experiments
    flags = ["--exp_dir", exp_dir, "--resamples", 500]
    groups = run_main(capsys, "LAD_s2", "PKD_s1", "--seed_groups", *flags)
    listed = run_main(capsys, "LAD_s1,LAD_s2,LAD_s3", "PKD_s3,PKD_s2,PKD_s1", *flags)
    for out in (groups, listed):
        assert "A = mean of 3 seeds:" in out and "LAD_s3: model-200.pt, fp32" in out
        assert "LAD_lr" not in out and "other_rows" not in out  # other settings, other method
        assert "all 20 splits" in out and "(3 vs 3 seeds) over 500 rows" in out
        assert "hierarchical paired bootstrap" in out
    # the same groups in another order: the same means and p, another draw of the seeds
    assert groups.splitlines()[-1].split("[")[0] == listed.splitlines()[-1].split("[")[0]
    fixed = run_main(capsys, "LAD_s1", "PKD_s1", "--ckpt", 200, "--confidence", 0.9, *flags)
    assert "A = LAD_s1: model-200.pt, fp32 (--ckpt)" in fixed and "90% interval" in fixed
    help_text = compare.build_parser().format_help()
    for text in ("--split", "--ckpt", "--task", "--model", "--exp_dir", "--resamples", "--seed",
                 "--confidence", "--seed_groups", "Paired", "hierarchical bootstrap", "p-value"):
        assert text in help_text, text


@pytest.mark.slow
def test_the_command_refuses_in_one_line(experiments, capsys):
    exp_dir, _, _ = experiments
    flags = ["--exp_dir", exp_dir, "--resamples", 10]
    assert_clean_failure(run_compare("LAD_s1", "LAD_s9", *flags), "'LAD_s9' not found",
                         "LAD_s1, LAD_s2", "check B")
    assert_clean_failure(run_compare("LAD_s1", "other_rows", *flags), "different rows",
                         "rows-v1", "rows-v2")
    assert_clean_failure(run_compare("LAD_s1", "PKD_s1", "--ckpt", "300", *flags),
                         "no per-example predictions of model-300.pt",
                         "100-fp32, 200-bf16, 200-fp32",
                         f"run_fine_tune_eval.py --experiment LAD_s1 --task mnli --dataset "
                         f"dev_matched --ckpt 300 --exp_dir {exp_dir}")  # (pasted, it finds it)
    from fine_tune.errors import UserError
    for argv, expected in (
            (["--split", "dev_mismatched"], "no per-example predictions of model-200.pt on dev_mismatched"),
            (["--split", "dev"], "--task mnli has no labelled split 'dev'"),
            (["--seed_groups", "--ckpt", "100"], None)):
        if expected is None:
            run_main(capsys, "LAD_s1", "PKD_s1", *argv, *flags)
            continue
        with pytest.raises(UserError, match=expected):
            run_main(capsys, "LAD_s1", "PKD_s1", *argv, *flags)
    with pytest.raises(UserError, match="LAD_s1 more than once"):
        run_main(capsys, "LAD_s1,LAD_s1", "PKD_s1", *flags)
    with pytest.raises(UserError, match="one experiment per side"):
        run_main(capsys, "LAD_s1,LAD_s2", "PKD_s1", "--seed_groups", *flags)
    # Groups that share experiments are not paired samples: refused, naming them (two
    # members of one seed group put the whole group on both sides).
    with pytest.raises(UserError, match="A and B share LAD_s1, LAD_s2, LAD_s3: .*different seed groups"):
        run_main(capsys, "LAD_s1", "LAD_s2", "--seed_groups", *flags)
    with pytest.raises(UserError, match="A and B share LAD_s2:"):
        run_main(capsys, "LAD_s1,LAD_s2", "PKD_s1,LAD_s2", *flags)
    # One experiment against itself stays allowed: no difference.
    assert "accuracy: +0.0000 [0.0000, 0.0000], p = 1.0" in run_main(capsys, "LAD_s1", "LAD_s1", *flags)
    for argv, expected in ((["--resamples", "0"], "--resamples: must be a positive integer"),
                           (["--ckpt", "last"], "'best'"), (["--confidence", "95"], "between 0 and 1")):
        with pytest.raises(SystemExit):
            run_main(capsys, "LAD_s1", "PKD_s1", *flags, *argv)
        assert expected in capsys.readouterr().err


# ---- 6. speed ------------------------------------------------------------------------------

def test_speed_of_mnli_dev_matched_at_10000_resamples():
    rng = np.random.default_rng(0)
    gold, a = classes(MNLI, 9815, 0.84, rng)
    b = noisy(MNLI, gold, 0.83, rng)
    started = time.perf_counter()
    result = paired_bootstrap(MNLI, gold, [a], [b], resamples=10000, seed=0)
    seconds = time.perf_counter() - started
    print(f"\npaired_bootstrap, MNLI dev_matched size (9815 rows), 10000 resamples and "
          f"10000 permutations: {seconds:.2f} s (load average {os.getloadavg()[0]:.1f})")
    assert seconds < 60
    assert result["accuracy"].low < result["accuracy"].difference < result["accuracy"].high
