"""The other GLUE tasks: every task's layout through the reader, the metrics by hand, and
teacher -> LAD -> evaluation -> submission file through the entry scripts for a pair task
(RTE), a single-sentence task (SST-2) and the regression task (STS-B); AX predicted by an
MNLI experiment."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import flags, run_script
from fine_tune.data import read_split
from fine_tune.errors import UserError
from fine_tune.glue import TASKS, get_task
from glue_data import write_task


@pytest.mark.parametrize("name", TASKS)
def test_every_task_layout_reads(tmp_path, name):
    task = get_task(name)
    write_task(tmp_path, name, rows=7)
    for split, (_, layout) in task.files.items():
        examples = read_split(tmp_path, name, split)
        assert len(examples.premise) == 7 and all(examples.premise)
        assert (examples.hypothesis is None) == (len(layout.text) == 1)
        assert examples.index == [str(i) for i in range(7)]
        if layout.label is None:
            assert examples.labels is None
        elif task.regression:
            assert examples.labels.dtype == np.float32 and ((0 <= examples.labels) & (examples.labels <= 5)).all()
        else:
            assert examples.labels.tolist() == [i % task.num_labels for i in range(7)]


def test_cola_has_no_header_and_mrpc_starts_with_a_byte_order_mark(tmp_path):
    folder = write_task(tmp_path, "cola", rows=3)
    first = (folder / "train.tsv").read_text().splitlines()[0].split("\t")
    assert len(first) == 4 and first[1] == "0"  # a data row: source, label, annotation, sentence
    assert read_split(tmp_path, "cola", "train").labels.tolist() == [0, 1, 0]
    folder = write_task(tmp_path, "mrpc", rows=3)
    assert (folder / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t#1 ID")
    assert read_split(tmp_path, "mrpc", "dev").premise[0]


def test_bad_rows_name_file_line_and_expectation(tmp_path):
    folder = write_task(tmp_path, "stsb", rows=4)
    lines = (folder / "dev.tsv").read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tfive"
    (folder / "dev.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"STS-B/dev.tsv:3: score 'five' is not a number"):
        read_split(tmp_path, "stsb", "dev")
    folder = write_task(tmp_path, "cola", rows=4)
    (folder / "train.tsv").write_text("gj04\t1\tonly three fields\n")
    with pytest.raises(UserError, match=r"CoLA/train.tsv:1: malformed row: expected 4 tab-separated "
                                        r"fields, found 3"):
        read_split(tmp_path, "cola", "train")
    with pytest.raises(UserError, match=r"--task rte has no split 'dev_matched'; its splits are "
                                        r"train, dev, test"):
        read_split(tmp_path, "rte", "dev_matched")


def test_metrics_against_hand_computed_values():
    from fine_tune.evaluation import METRICS
    gold, predicted = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # TP 2, FP 1, FN 1, TN 1: F1 = 2*2 / (2*2 + 1 + 1) = 2/3;
    # MCC = (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert METRICS["f1"](gold, predicted) == pytest.approx(2 / 3)
    assert METRICS["mcc"](gold, predicted) == pytest.approx(1 / 6)
    assert METRICS["accuracy"](gold, predicted) == pytest.approx(3 / 5)
    scores, guesses = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 2.0, 1.0, 4.0])
    # Pearson: deviations (-1.5, -.5, .5, 1.5) and (-1.75, .25, -.75, 2.25):
    # cov 5.5 / sqrt(5 * 8.75); Spearman: ranks (1, 2, 3, 4), (1, 3, 2, 4): 1 - 6*2/60 = 0.8
    assert METRICS["pearson"](scores, guesses) == pytest.approx(5.5 / np.sqrt(5 * 8.75))
    assert METRICS["spearman"](scores, guesses) == pytest.approx(0.8)


TEACHER = ("--experiment teacher --model bert --ptrain_ver tiny-bert --dataset train "
           "--batch_size 8 --ckpt_step 3 --log_step 3 --lr 1e-3 --max_seq_len 32 --device_id -1 "
           "--total_step 6 --warmup_step 1")
STUDENT = ("--teacher_exp teacher --tckpt 6 --experiment LAD --d_model 32 --d_ff 64 "
           "--num_attention_heads 2 --num_hidden_layers 2 --batch_size 8 --total_step 3 "
           "--warmup_step 0 --ckpt_step 3 --log_step 3 --device_id -1")


@pytest.mark.parametrize("name, submitted", [
    ("rte", {"entailment", "not_entailment"}),
    ("sst2", {"0", "1"}),
    ("stsb", None),
])
def test_teacher_student_evaluation_and_submission(workdir, name, submitted):
    write_task(workdir / "data" / "fine_tune", name, rows=24)
    task = get_task(name)
    run_script("run_fine_tune.py", *flags(TEACHER), "--task", name, cwd=workdir)
    run_script("run_lad_distil.py", *flags(STUDENT), "--task", name, cwd=workdir)
    for experiment in ("teacher", "LAD"):
        folder = workdir / "exp" / f"{experiment}_bert_{name}"
        config = json.loads((folder / "model_config.json").read_text())
        assert config["num_labels" if "num_labels" in config else "id2label"] and \
            len(config["id2label"]) == task.num_labels
        result = run_script("run_fine_tune_eval.py", *flags(
            f"--experiment {experiment} --task {name} --dataset dev --device_id -1"), cwd=workdir)
        results = pd.read_csv(folder / "results_dev.csv")
        assert list(results.columns) == ["step", "amp", *task.metrics, "examples_per_s", "device",
                                         "checkpoint"]
        assert f"best ({task.metrics[0]}): model-" in result.stdout
        run_script("generate_test_prediction.py", *flags(
            f"--experiment {experiment} --task {name} --dataset test --ckpt 3 --device_id -1"),
            cwd=workdir)
        submission = pd.read_csv(folder / "predictions" / "3" / task.submissions["test"], sep="\t",
                                 dtype=str, keep_default_na=False)
        assert list(submission.columns) == ["index", "prediction"]
        assert list(submission["index"]) == [str(i) for i in range(24)]
        if submitted is None:  # scores, clipped to GLUE's range
            values = submission["prediction"].astype(float)
            assert values.between(0, 5).all()
        else:
            assert set(submission["prediction"]) <= submitted
    logged = (workdir / "exp" / f"LAD_bert_{name}" / "log")
    assert logged.is_dir()


def test_ax_is_predicted_by_an_mnli_experiment(workdir):
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)  # MNLI (the default task)
    write_task(workdir / "data" / "fine_tune", "ax", rows=10)
    run_script("generate_test_prediction.py", *flags(
        "--experiment teacher --task ax --dataset test --ckpt 6 --device_id -1"), cwd=workdir)
    lines = (workdir / "exp" / "teacher_bert_mnli" / "predictions" / "6" / "AX.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "neutral", "contradiction"}


def test_task_mistakes_are_one_line(workdir):
    write_task(workdir / "data" / "fine_tune", "rte", rows=8)
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--task", "rte", "--dataset",
                        "dev_matched", cwd=workdir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --task rte has no split 'dev_matched'; its splits are train, dev, test: pick one "
        "with --dataset")
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--task", "stsb", "--num_class", "2",
                        cwd=workdir, check=False)
    assert "--num_class 2 does not match --task stsb, which is a regression with one output; use " \
        "--num_class 1" in result.stderr
    assert not (workdir / "exp").exists()
    shutil.rmtree(workdir / "data" / "fine_tune" / "RTE")
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--task", "rte", cwd=workdir, check=False)
    assert "RTE/train.tsv not found: download RTE with `python -m fine_tune.download --data_dir " \
        "data/fine_tune --task rte`" in result.stderr


def test_epochs_and_warmup_rate_become_steps(workdir, monkeypatch, capsys):
    """As the authors' per-task scripts: round(examples / batch * epochs), round(total * rate);
    the gates on the same schedule unless given their own."""
    from fine_tune import cli
    from fine_tune.lad import distil_lad
    from fine_tune.teacher import fine_tune_teacher
    monkeypatch.chdir(workdir)
    teacher = flags(TEACHER.replace("--total_step 6 --warmup_step 1", "--epoch 0.5 --warmup_rate 0.25"))
    fine_tune_teacher(cli.teacher_parser().parse_args(teacher))  # 320 MNLI rows, batch 8
    assert "--epoch 0.5 on 320 examples at --batch_size 8 is --total_step 20; --warmup_rate 0.25 " \
           "is --warmup_step 5" in capsys.readouterr().out
    config = json.loads((workdir / "exp" / "teacher_bert_mnli" / "config.json").read_text())
    assert (config["total_step"], config["warmup_step"], config["epoch"]) == (20, 5, 0.5)
    student = flags(STUDENT.replace("--tckpt 6", "--tckpt 20").replace(
        "--total_step 3 --warmup_step 0", "--epoch 0.1 --warmup_rate 0.5 --gate_warmup_rate 0"))
    distil_lad(cli.lad_parser().parse_args(student))
    config = json.loads((workdir / "exp" / "LAD_bert_mnli" / "config.json").read_text())
    assert (config["total_step"], config["warmup_step"]) == (4, 2)
    assert (config["gate_total_step"], config["gate_warmup_step"]) == (None, 0)  # follows: 4 steps
    assert "model-4.pt" in {p.name for p in (workdir / "exp" / "LAD_bert_mnli").iterdir()}


def test_steps_and_epochs_together_are_refused(workdir):
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--epoch", "3", cwd=workdir, check=False)
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: --total_step and --epoch set the same thing: pass one of them (see "
        "run_fine_tune.py --help)")
