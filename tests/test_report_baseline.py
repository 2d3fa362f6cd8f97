"""python -m fine_tune.report --baseline NAME: every experiment and seed group of the task
gets its difference from NAME with fine_tune.compare's paired-bootstrap interval."""
import numpy as np
import pytest

from fine_tune import compare
from fine_tune.errors import UserError
from fine_tune.glue import get_task
from fine_tune.report import build_parser, report
from test_compare import make_experiment, noisy

MNLI = get_task("mnli")


def cell(differences, metric):
    d = differences[metric]
    return f"{d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}] p={d.p_value:.3g}"


def test_baseline_columns_equal_compare(tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, 300).astype(np.int8)
    for method, right in (("LAD", 0.8), ("PKD", 0.7)):
        for seed in (1, 2):
            make_experiment(exp_dir, f"{method}_s{seed}", MNLI, gold,
                            {(100, "fp32"): noisy(MNLI, gold, right - 0.2, rng),
                             (200, "fp32"): noisy(MNLI, gold, right, rng)},
                            seed=seed, method=method)
    report(build_parser().parse_args(["--exp_dir", str(exp_dir), "--baseline", "PKD_s1",
                                      "--resamples", "400"]))
    out = capsys.readouterr().out
    one, _ = compare.compare_experiments(exp_dir, "bert", "mnli", ["LAD_s2"], ["PKD_s1"],
                                         resamples=400, seed=0)
    groups, _ = compare.compare_experiments(exp_dir, "bert", "mnli", ["LAD_s1", "LAD_s2"],
                                            ["PKD_s1", "PKD_s2"], resamples=400, seed=0)
    lines = out.splitlines()
    lad_s2 = next(line for line in lines if line.startswith("LAD_s2_bert_mnli"))
    assert cell(one, "accuracy") in lad_s2 and cell(one, "macro_f1") in lad_s2
    assert one["accuracy"].difference > 0 and one["accuracy"].low > 0  # LAD is better here
    pkd_s1 = next(line for line in lines if line.startswith("PKD_s1_bert_mnli"))
    assert "(baseline)" in pkd_s1
    group = next(line for line in lines if line.startswith("LAD_s1_bert_mnli, LAD_s2_bert_mnli"))
    difference = groups["accuracy"]
    assert f"{difference.difference:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}]" in group
    assert "Δ accuracy vs PKD_s1" in out
    assert "Δ accuracy vs PKD_s1" in (exp_dir / "report.md").read_text()


def test_unknown_baseline_is_refused(tmp_path):
    exp_dir = tmp_path / "exp"
    gold = np.zeros(10, dtype=np.int8)
    make_experiment(exp_dir, "LAD_s1", MNLI, gold, {(1, "fp32"): gold})
    with pytest.raises(UserError, match="--baseline PKD: no experiment of that name"):
        report(build_parser().parse_args(["--exp_dir", str(exp_dir), "--baseline", "PKD"]))
