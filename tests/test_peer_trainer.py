"""bench/peer_trainer.py --smoke: our scripts and (when accelerate is installed) the
Trainer both train and evaluate, and the table and the JSON say so. Not a timing test:
the figures are only checked to be there and positive. About a minute: every run is a
fresh process, and importing transformers takes most of each."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "bench" / "peer_trainer.py"


def run(args, cwd, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.mark.slow
@pytest.mark.bench
def test_smoke_runs_both_sides_and_writes_the_table(tmp_path):
    output = tmp_path / "out" / "peer.json"
    # (the length-grouped pair is the same path with one flag per side, and two more
    # processes: left out to keep this test near a minute)
    result = run(["--smoke", "--threads", "1", "--no_group_by_length", "--output", str(output)],
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(output.read_text())
    settings = report["settings"]
    assert settings["smoke"] and settings["steps"] == 4 and settings["repeats"] == 1

    pair = report["pairs"][0]
    assert pair["name"] == "random order"
    (ours,) = pair["ours"]
    assert ours["examples_per_s"] > 0 and pair["median_ours"] == ours["examples_per_s"]
    # steps 2-4 timed (the first left out), in ours' log intervals, 32 + 32 + 16 examples
    assert ours["timed_steps"] == 3 and ours["timed_examples"] == 80
    ours_eval = report["evaluation"][0]
    assert ours_eval["side"] == "ours" and ours_eval["examples_per_s"] > 0
    assert 0 <= ours_eval["accuracy"] <= 1 and 0 <= ours_eval["f1"] <= 1

    grouped = report["pairs"][1]
    assert grouped["name"] == "length-grouped" and grouped["skipped"] == "--no_group_by_length"

    lines = result.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("run_fine_tune.py vs")):]
    ours_row = next(line for line in table if line.split()[:3] == ["random", "order", "ours"])
    assert float(ours_row.split()[3]) > 0
    assert any(line.strip().startswith("ours: run_fine_tune_eval.py") for line in table)
    assert any(line.startswith("machine:") and "torch" in line for line in table)

    if importlib.util.find_spec("accelerate") is None:  # our side still ran, the reason is said
        assert pair["trainer"] is None and "accelerate" in report["trainer_skipped"]
        assert "Trainer side skipped: accelerate" in result.stdout
        return
    (trainer,) = pair["trainer"]
    assert trainer["examples_per_s"] > 0 and trainer["timed_examples"] == 80
    assert trainer["sampler"] == "RandomSampler"
    assert pair["ratio_ours_over_trainer"] > 0
    trainer_row = next(line for line in table if line.split()[:1] == ["Trainer"])
    assert float(trainer_row.split()[1]) > 0 and trainer_row.split()[-1].endswith("x")
    scored = {e["side"]: e for e in report["evaluation"]}
    for side in ("evaluate", "pipeline"):
        assert scored[side]["examples_per_s"] > 0 and scored[side]["rows"] == settings["dev_rows"]
    # the pipeline scores the Trainer's model as Trainer.evaluate does (other padding may
    # flip a near-tie: at most one row)
    assert abs(scored["pipeline"]["accuracy"] - scored["evaluate"]["accuracy"]) \
        <= 1 / settings["dev_rows"] + 1e-9
    assert any(line.strip().startswith("Trainer: Trainer.evaluate") for line in table)


@pytest.mark.slow
def test_missing_model_or_data_folder_is_one_line(tmp_path):
    result = run(["--model_dir", str(tmp_path / "nowhere")], cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: model folder") and "nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    result = run(["--model_dir", str(tmp_path / "model"), "--glue_dir", str(tmp_path / "glue")],
                 cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: data folder") and "MRPC" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
