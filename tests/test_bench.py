"""The benchmark's authors'-approach LAD step computes what ours computes (not a timing test)."""
import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_and_both_lad_steps_agree(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--size", "small",
                             "--methods", "teacher,lad", "--steps", "1", "--warmup", "0",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "small-cpu-fp32.json").read_text())
    rows = {row["what"]: row for row in report["results"]}
    authors = rows["train lad, authors' approach"]
    assert authors["same_loss_and_gradients"] is True
    assert authors["first_step_loss_ours"] == authors["first_step_loss_authors"] or \
        abs(authors["first_step_loss_ours"] / authors["first_step_loss_authors"] - 1) < 1e-5
    assert authors["relative_grad_difference"] < 1e-4
    assert rows["train lad"]["examples_per_s"] > 0 and rows["train teacher"]["ms_per_step"] > 0
    assert {"evaluate/predict teacher", "evaluate/predict student"} <= rows.keys()
    assert report["machine"]["torch"] and (tmp_path / "small-cpu-fp32.csv").is_file()
