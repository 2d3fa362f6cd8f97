"""bench/inference.py: the teacher/student inference benchmark runs end to end at toy size,
and its two paths (our predict, transformers' pipeline on the exported folder) agree."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "bench" / "inference.py"
GLUE = ROOT.parent / "shared" / "glue"


def bench(*flags, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, flags)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def glue_dir(tmp_path):
    """GLUE's real MRPC files where this checkout has them, else a small file in their layout."""
    if (GLUE / "MRPC" / "dev.tsv").is_file():
        return GLUE
    from glue_data import write_task
    write_task(tmp_path / "glue", "mrpc", rows=48)
    return tmp_path / "glue"


@pytest.mark.slow
def test_smoke_run_reports_both_models_and_paths(tmp_path):
    output = tmp_path / "inference.json"
    # One thread: two would fight the other test worker for the two cores.
    result = bench("--smoke", "--threads", "1", "--glue_dir", glue_dir(tmp_path),
                   "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    models = {row["model"]: row for row in report["models"]}
    assert list(models) == ["teacher", "student"]
    teacher, student = models["teacher"], models["student"]
    assert (teacher["layers"], student["layers"]) == (12, 6)
    assert teacher["hidden"] == student["hidden"] == 32
    for row in (teacher, student):
        assert set(row["examples_per_s"]) == {"ours", "ours_ids", "pipeline"}
        assert all(speed > 0 for speed in row["examples_per_s"].values())
        assert all(len(times) == 3 for times in row["seconds"].values())  # --repeats 3
        # Same weights, same rows: our predict and the pipeline predict the same classes.
        check = row["check"]
        assert check["rows"] == report["settings"]["rows"] > 0
        assert check["predictions_equal"] is True and check["mismatched_rows"] == 0
        assert check["max_abs_logit_difference"] < 1e-4
        # (both classes are predicted, and no row sits within rounding of the boundary)
        assert len(check["classes_predicted"]) == 2
        assert check["smallest_margin"] > 10 * check["max_abs_logit_difference"]
    assert student["params"] < teacher["params"]
    assert student["params_no_embeddings"] < teacher["params_no_embeddings"]
    assert teacher["speedup_vs_teacher"] == {"ours": 1.0, "ours_ids": 1.0, "pipeline": 1.0}
    machine = report["machine"]
    assert machine["torch"] and machine["transformers"] and machine["torch_threads"] == 1
    assert "student" in result.stdout and "pipeline ex/s" in result.stdout


@pytest.mark.slow
def test_missing_inputs_are_one_line_and_exit_2(tmp_path):
    result = bench("--smoke", "--glue_dir", tmp_path / "nowhere", "--output", tmp_path / "x.json")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "MRPC/dev.tsv not found" in result.stderr
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "model_config.json").write_text("{}")
    result = bench("--smoke", "--glue_dir", glue_dir(tmp_path), "--experiment_dir",
                   tmp_path / "exp", "--output", tmp_path / "x.json")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "export a checkpoint first" in result.stderr
    assert not (tmp_path / "x.json").exists()
