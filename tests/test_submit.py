"""python -m fine_tune.submit: the GLUE submission zip from chosen experiments."""
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from fine_tune.errors import UserError
from fine_tune.glue import TASKS_BY_NAME
from fine_tune.submit import build_parser, pack


def fake_experiment(exp_dir, name, task, steps=(5, 10), best=10, files=()):
    """An experiment folder with a dev results file and submission files at each step."""
    folder = exp_dir / f"{name}_bert_{task}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    split = "dev_matched" if task == "mnli" else "dev"
    metric = TASKS_BY_NAME[task].metrics[0]
    rows = "\n".join(f"{s},{0.9 if s == best else 0.5}" for s in steps)
    (folder / f"results_{split}.csv").write_text(f"step,{metric}\n{rows}\n")
    for step in steps:
        (folder / f"model-{step}.pt").write_bytes(b"")  # (only its presence is read)
        (folder / "predictions" / str(step)).mkdir(parents=True)
        for file_name in files:
            (folder / "predictions" / str(step) / file_name).write_text(
                f"index\tprediction\n0\t{task}-{step}\n")
    return folder


@pytest.fixture
def exp_dir(tmp_path):
    exp = tmp_path / "exp"
    for name, task in TASKS_BY_NAME.items():
        if task.model_task:
            continue
        files = list(task.submissions.values()) + (["AX.tsv"] if name == "mnli" else [])
        fake_experiment(exp, "LAD", name, files=files)
    return exp


def argv(exp_dir, output, *extra):
    choices = [item for name in TASKS_BY_NAME for item in (f"--{name}", "LAD")]
    return choices + ["--exp_dir", str(exp_dir), "--output", str(output), *extra]


def test_a_complete_set_is_packed_at_the_zips_top_level(exp_dir, tmp_path):
    output = tmp_path / "glue_submission.zip"
    args = build_parser().parse_args(argv(exp_dir, output, "--rte", "LAD:5"))
    pack(args)
    with zipfile.ZipFile(output) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv",
                                "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv",
                                "AX.tsv"])
        assert archive.read("RTE.tsv").decode().endswith("rte-5\n")  # the step asked for
        assert archive.read("QQP.tsv").decode().endswith("qqp-10\n")  # best on dev
        assert archive.read("AX.tsv").decode().endswith("mnli-10\n")  # the MNLI experiment's


@pytest.mark.slow
def test_an_incomplete_set_is_refused_unless_partial(exp_dir, tmp_path):
    output = tmp_path / "out.zip"
    command = [sys.executable, "-m", "fine_tune.submit", "--mnli", "LAD", "--exp_dir", str(exp_dir),
               "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: incomplete submission: no experiment for ax, qnli, qqp, sst2, mrpc, rte, cola, "
        "stsb, wnli (flags --ax --qnli --qqp --sst2 --mrpc --rte --cola --stsb --wnli); pass "
        "--partial to pack only the chosen tasks")
    assert not output.exists()
    pack(build_parser().parse_args(["--mnli", "LAD", "--exp_dir", str(exp_dir), "--output",
                                    str(output), "--partial"]))
    assert sorted(zipfile.ZipFile(output).namelist()) == ["MNLI-m.tsv", "MNLI-mm.tsv"]


@pytest.mark.slow
def test_missing_files_and_results_name_the_command_to_run(exp_dir, tmp_path):
    (exp_dir / "LAD_bert_rte" / "predictions" / "10" / "RTE.tsv").unlink()
    with pytest.raises(UserError, match=r"--rte LAD: .*RTE.tsv not found: write it with python "
                                        r"generate_test_prediction.py --experiment LAD --task rte "
                                        rf"--dataset test --ckpt 10 --exp_dir {exp_dir}$"):
        pack(build_parser().parse_args(argv(exp_dir, tmp_path / "x.zip")))
    (exp_dir / "LAD_bert_rte" / "model-10.pt").unlink()  # pruned: no command can write it now
    with pytest.raises(UserError, match=r"--rte LAD: .*RTE.tsv not found, and model-10.pt is no "
                                        r"longer on disk to write it: name a step whose "
                                        r"predictions exist \(--rte LAD:STEP\)"):
        pack(build_parser().parse_args(argv(exp_dir, tmp_path / "x.zip")))
    (exp_dir / "LAD_bert_cola" / "results_dev.csv").unlink()
    with pytest.raises(UserError, match=r"--cola: .*results_dev.csv not found.*run_fine_tune_eval.py "
                                        r"--experiment LAD --task cola --dataset dev"):
        pack(build_parser().parse_args(["--cola", "LAD", "--exp_dir", str(exp_dir), "--partial"]))
    assert not (tmp_path / "x.zip").exists()
    result = subprocess.run([sys.executable, "-m", "fine_tune.submit", "--rte", "LAD:last"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "expected EXPERIMENT, EXPERIMENT:STEP or EXPERIMENT:best, got 'LAD:last'" in result.stderr
