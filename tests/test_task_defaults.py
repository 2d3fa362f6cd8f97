"""Defaults that fit the task: flags left out take the table's value for --task
(fine_tune.task_defaults; MNLI's are the seed's, exactly as before), a flag given always
wins, config.json records the values used; evaluation and prediction without --task find
the one experiment of that name."""
import argparse
import json
import re
import shutil

import pytest

from conftest import ROOT, flags, run_script
from fine_tune import cli, task_defaults
from fine_tune.errors import UserError
from fine_tune.glue import TRAINABLE_TASKS, get_task
from glue_data import write_task

STUDENT_REQUIRED = ["--experiment", "x", "--teacher_exp", "t", "--tckpt", "1"]


def parse(script, *argv):
    required = ["--experiment", "x"] if script == "teacher" else STUDENT_REQUIRED
    return vars(getattr(cli, f"{script}_parser")().parse_args([*required, *argv]))


# What each script's flags defaulted to before the per-task table (the seed's MNLI values).
MNLI_BEFORE = {
    "teacher": dict(lr=3e-5, total_step=36816, warmup_step=10000, epoch=None, warmup_rate=None),
    "lad": dict(lr=1e-4, gate_lr=5e-7),
    "lad_no": dict(lr=5e-5, gate_lr=1e-6),
    "probing": dict(lr=1e-4, gate_lr=1e-6),
    "alp": dict(lr=1e-4, seed=65, log_step=100),
    "pkd": dict(lr=5e-5),
    # the baselines (no seed command): LAD's row, TinyBERT's and MiniLM's loss weights
    "kd": dict(lr=1e-4),
    "tinybert": dict(lr=1e-4, softmax_temp=1.0, soft_weight=1.0, hard_weight=0.0, mu=1.0),
    "minilm": dict(lr=1e-4, mu=1.0),
}
# Their own loss weights on every task: (--softmax_temp, --soft_weight, --hard_weight, --mu).
OWN_LOSS = {"tinybert": (1, 1, 0, 1), "minilm": (10, 0.5, 0.5, 1)}
STUDENT_BEFORE = dict(total_step=49088, warmup_step=4908, epoch=None, warmup_rate=None,
                      softmax_temp=10.0, soft_weight=0.5, hard_weight=0.5, mu=500.0,
                      gate_total_step=None, gate_warmup_step=None, gate_epoch=None,
                      gate_warmup_rate=None)


@pytest.mark.parametrize("script", task_defaults.SCRIPTS)
def test_mnli_keeps_the_seed_defaults_of_every_script(script):
    expected = ({} if script == "teacher" else STUDENT_BEFORE) | MNLI_BEFORE[script]
    for argv in ([], ["--task", "mnli"]):
        values = parse(script, *argv)
        assert {k: values.get(k) for k in expected if k in values} == \
            {k: v for k, v in expected.items() if k in values}
        assert "gate_lr" in values or script not in ("lad", "lad_no", "probing")


def test_rte_teacher_takes_the_authors_schedule():
    values = parse("teacher", "--task", "rte")
    assert (values["lr"], values["total_step"], values["warmup_step"]) == (7e-5, 385, 115)
    assert (values["epoch"], values["warmup_rate"]) == (None, None)


@pytest.mark.parametrize("script", task_defaults.STUDENTS)
def test_rte_students_take_the_lad_row_in_epochs(script):
    values = parse(script, "--task", "rte")
    assert (values["lr"], values.get("gate_lr", 3e-5), values["epoch"], values["warmup_rate"]) == \
        (7e-4, 3e-5, 10, 0.1)
    assert (values["softmax_temp"], values["soft_weight"], values["hard_weight"],
            values.get("mu", 1000)) == OWN_LOSS.get(script, (10, 0.5, 0.5, 1000))
    assert ("mu" in values) == (script != "kd")  # KD has no layer loss
    assert (values["total_step"], values["warmup_step"]) == (None, None)  # counted from the data
    assert values.get("gate_total_step") is None and values.get("gate_epoch") is None


def test_a_flag_given_wins_and_one_form_of_a_schedule_blocks_the_other():
    values = parse("teacher", "--task", "rte", "--lr", "1e-3", "--warmup_step", "7")
    assert (values["lr"], values["total_step"], values["warmup_step"]) == (1e-3, 385, 7)
    values = parse("lad", "--task", "qqp", "--mu", "3", "--soft_weight", "0.1")
    assert (values["mu"], values["soft_weight"], values["hard_weight"], values["lr"]) == (3, 0.1, 0.3, 5e-4)
    # --epoch given: no --total_step default (and the warmup default stays)
    values = parse("lad", "--task", "rte", "--epoch", "2")
    assert (values["epoch"], values["total_step"], values["warmup_rate"]) == (2, None, 0.1)
    values = parse("teacher", "--task", "mnli", "--epoch", "2")
    assert (values["epoch"], values["total_step"], values["warmup_step"]) == (2, None, 10000)
    # --total_step / --warmup_step given: no --epoch / --warmup_rate default
    values = parse("lad", "--task", "rte", "--total_step", "50")
    assert (values["total_step"], values["epoch"], values["warmup_rate"]) == (50, None, 0.1)
    values = parse("lad", "--task", "rte", "--warmup_step", "5")
    assert (values["epoch"], values["warmup_step"], values["warmup_rate"]) == (10, 5, None)
    # the gates' own schedule flags stay as given (unset: the model's)
    values = parse("lad", "--task", "rte", "--gate_epoch", "1")
    assert (values["gate_epoch"], values["gate_total_step"], values["epoch"]) == (1, None, 10)


def test_every_task_and_script_has_every_default():
    for task in TRAINABLE_TASKS:
        for script in task_defaults.SCRIPTS:
            row = task_defaults.DEFAULTS[task][script]
            values = parse(script, "--task", task)
            for name in task_defaults.PER_TASK:
                if name in values:
                    assert values[name] == row[name], (task, script, name)
            # exactly one form of each half of the schedule
            for pair in task_defaults.SCHEDULE:
                assert sum(values[name] is not None for name in pair) == 1, (task, script, pair)


def test_our_teacher_steps_are_the_stated_epochs_of_glue_rows():
    """CoLA and STS-B: 3 epochs, WNLI 5, at batch 32, 10% warmup (README.md)."""
    for task, epochs in (("cola", 3), ("stsb", 3), ("wnli", 5)):
        row = task_defaults.DEFAULTS[task]["teacher"]
        total = round(get_task(task).rows["train"] / 32 * epochs)
        assert (row["total_step"], row["warmup_step"]) == (total, round(total * 0.1))


def test_readme_table_matches_the_defaults():
    """README.md's table of per-task defaults states what the parsers use."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- per-task defaults -->")[1]
    table = block.strip().split("\n\n")[0].splitlines()
    rows = [line.split("|")[1:-1] for line in table[2:]]
    assert [row[0].strip() for row in rows] == list(TRAINABLE_TASKS)
    number = lambda cell: float(cell.strip().strip("`"))  # noqa: E731
    for cells in rows:
        task = cells[0].strip()
        teacher, lad = task_defaults.DEFAULTS[task]["teacher"], task_defaults.DEFAULTS[task]["lad"]
        total, warmup = cells[2].split("/")
        assert (number(cells[1]), number(total), number(warmup)) == \
            (teacher["lr"], teacher["total_step"], teacher["warmup_step"]), task
        assert (number(cells[3]), number(cells[4])) == (lad["lr"], lad["gate_lr"]), task
        schedule = re.match(r"\s*([\d.]+) epochs?, ([\d.]+)|\s*steps ([\d]+) / ([\d]+)", cells[5])
        if lad["epoch"] is not None:
            assert (float(schedule[1]), float(schedule[2])) == (lad["epoch"], lad["warmup_rate"]), task
        else:
            assert (int(schedule[3]), int(schedule[4])) == (lad["total_step"], lad["warmup_step"]), task
        soft, hard = cells[7].split("/")
        assert (number(cells[6]), number(soft), number(hard), number(cells[8])) == \
            (lad["softmax_temp"], lad["soft_weight"], lad["hard_weight"], lad["mu"]), task


def test_help_shows_the_values_per_task():
    text = " ".join(cli.lad_parser().format_help().split())
    assert "--lr LR peak learning rate (default per --task: mnli, qnli, sst2 1e-4; qqp 5e-4; " \
           "mrpc, rte, cola, stsb, wnli 7e-4)" in text
    assert "--epoch EPOCH" in text and "mnli by --total_step; qnli 4; qqp 5" in text
    text = " ".join(cli.teacher_parser().format_help().split())
    assert "(default per --task: mnli 36816; qnli 9822; qqp 34110; sst2 6315; mrpc 345; rte 385;" in text
    text = " ".join(cli.eval_parser().format_help().split())
    assert "left out: the task of the one experiment named --experiment under --exp_dir" in text


def test_checks_before_the_data_is_read_skip_steps_not_yet_counted():
    from fine_tune.training import check_training_args
    base = dict(task="rte", dataset="train", batch_size=32, accum_step=1, lr=1e-4, gate_lr=1e-6,
                **{f"{prefix}{name}": None for prefix in ("", "gate_")
                   for name in ("total_step", "warmup_step", "epoch", "warmup_rate", "beta1",
                                "beta2", "eps", "weight_decay", "max_norm")})
    check_training_args(argparse.Namespace(**base))  # --epoch defaults: nothing counted yet
    check_training_args(argparse.Namespace(**base | dict(warmup_step=4908)))  # total not yet known
    with pytest.raises(UserError, match="--warmup_step 200 is larger than --total_step 100"):
        check_training_args(argparse.Namespace(**base | dict(total_step=100, warmup_step=200)))
    # a known gate warmup is still checked against the model's known total, which it follows
    with pytest.raises(UserError, match="--gate_warmup_step 150 is larger than --gate_total_step 100"):
        check_training_args(argparse.Namespace(**base | dict(total_step=100, warmup_step=0,
                                                            gate_warmup_step=150)))


TEACHER = ("--experiment teacher --ptrain_ver tiny-bert --task rte --batch_size 8 --max_seq_len 32 "
           "--device_id -1 --total_step 2 --warmup_step 0")
STUDENT = ("--teacher_exp teacher --tckpt 2 --experiment LAD --task rte --d_model 32 --d_ff 64 "
           "--num_attention_heads 2 --num_hidden_layers 2 --device_id -1")


def test_rte_defaults_run_and_are_recorded_and_evaluation_finds_the_task(workdir, monkeypatch):
    """A short RTE student with every schedule flag left out: 10 epochs of 64 rows at batch
    32 is 20 steps, 2 of warmup; config.json records them. Evaluation without --task finds
    the RTE experiment; with the name also used for MNLI it names both, in one line."""
    from fine_tune.evaluation import evaluate_checkpoints
    from fine_tune.lad import distil_lad
    from fine_tune.teacher import fine_tune_teacher
    write_task(workdir / "data" / "fine_tune", "rte", rows=64)
    monkeypatch.chdir(workdir)
    fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER)))
    config = json.loads((workdir / "exp" / "teacher_bert_rte" / "config.json").read_text())
    assert (config["lr"], config["total_step"], config["warmup_step"]) == (7e-5, 2, 0)
    distil_lad(cli.lad_parser().parse_args(flags(STUDENT)))
    config = json.loads((workdir / "exp" / "LAD_bert_rte" / "config.json").read_text())
    assert {k: config[k] for k in ("lr", "gate_lr", "epoch", "warmup_rate", "total_step",
                                   "warmup_step", "softmax_temp", "mu")} == dict(
        lr=7e-4, gate_lr=3e-5, epoch=10, warmup_rate=0.1, total_step=20, warmup_step=2,
        softmax_temp=10, mu=1000)
    assert "model-20.pt" in {p.name for p in (workdir / "exp" / "LAD_bert_rte").iterdir()}

    args = cli.eval_parser().parse_args(flags("--experiment LAD --dataset dev --device_id -1"))
    assert args.task == "rte"
    results = evaluate_checkpoints(args)
    assert list(results["step"]) == [20]
    # none of that name: the not-found message, not MNLI's splits
    with pytest.raises(UserError, match="experiment 'nope' not found: no exp/nope_bert_mnli/"):
        evaluate_checkpoints(cli.eval_parser().parse_args(
            flags("--experiment nope --dataset dev --device_id -1")))

    shutil.copytree(workdir / "exp" / "LAD_bert_rte", workdir / "exp" / "LAD_bert_mnli")
    result = run_script("run_fine_tune_eval.py", *flags("--experiment LAD --dataset train"),
                        cwd=workdir, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("error: experiment 'LAD' exists for tasks mnli, rte under "
                                     "--exp_dir exp: pass --task (see run_fine_tune_eval.py --help)")
