"""The results store (issue 18): it only grows, keeps precisions apart, keeps per-example
predictions, and "best" has one definition that pruning, evaluation, prediction, submit
and export share. Each test names the defect it guards against."""
import json
import multiprocessing
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import flags, run_script
from fine_tune import cli, results
from fine_tune.experiment import Experiment
from fine_tune.glue import get_task
from fine_tune.settings import Settings

TEACHER = ("--experiment teacher_base --ptrain_ver tiny-bert --batch_size 16 --ckpt_step 1 "
           "--log_step 2 --lr 1e-3 --max_seq_len 64 --device_id -1 --total_step 4 --warmup_step 1")
MNLI = get_task("mnli")


@pytest.fixture(scope="module")
def teacher_once(assets, tmp_path_factory):
    """A teacher with checkpoints at steps 1-4, trained once for this file."""
    import shutil

    from fine_tune.teacher import fine_tune_teacher
    root, data_dir, bert = assets
    work = tmp_path_factory.mktemp("store")
    shutil.copytree(data_dir, work / "data" / "fine_tune")
    os.symlink(bert, work / "tiny-bert")
    here = os.getcwd()
    os.chdir(work)
    try:
        fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER)))
    finally:
        os.chdir(here)
    return work


@pytest.fixture
def trained(teacher_once, tmp_path, monkeypatch):
    """A copy of that teacher's working folder, the current folder of the test."""
    import shutil
    work = tmp_path / "work"
    shutil.copytree(teacher_once, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


def evaluate(*extra, split="dev_matched"):
    from fine_tune.evaluation import evaluate_checkpoints
    return evaluate_checkpoints(Settings(**vars(cli.eval_parser().parse_args(flags(
        f"--experiment teacher_base --dataset {split} --device_id -1 --batch_size 16")
        + list(extra)))))


def folder_of(work):
    return work / "exp" / "teacher_base_bert_mnli"


def set_scores(folder, split, scores: dict):
    """Edit the stored first metric (a marker the test controls) of some steps."""
    path = folder / f"results_{split}.csv"
    table = pd.read_csv(path)
    for step, value in scores.items():
        table.loc[table["step"] == step, "accuracy"] = value
    table.to_csv(path, index=False)


def test_pruning_keeps_the_stores_best_on_the_dev_split_whatever_the_flags(trained):
    """Defects 1 and 3: a resume without --eval_during_training pruned the best; pruning
    protected the first --eval_during_training split's best, not dev_matched's."""
    from fine_tune.training.checkpoints import prune_checkpoints
    folder = folder_of(trained)
    evaluate()
    evaluate(split="dev_mismatched")
    set_scores(folder, "dev_matched", {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3})
    set_scores(folder, "dev_mismatched", {1: 0.1, 2: 0.2, 3: 0.95, 4: 0.3})
    # This process evaluated nothing (a resume without --eval_during_training).
    run = SimpleNamespace(args=Settings(keep_checkpoints=1, task="mnli"),
                          experiment=Experiment(trained / "exp", "teacher_base", "bert", "mnli"))
    prune_checkpoints(run, 4)
    assert run.experiment.checkpoint_steps() == [2, 4]  # the dev_matched best and the last
    table = results.read_results(folder, "dev_matched")
    assert table["step"].tolist() == [1, 2, 3, 4]  # the scores of pruned checkpoints stay
    assert pd.read_csv(folder / "results_dev_matched.csv")["checkpoint"].tolist() == [
        "pruned", "on disk", "pruned", "on disk"]
    # Submit, export and --ckpt best agree with it.
    assert results.best_dev_step(folder, "teacher_base", MNLI, "--ckpt best") == (2, "dev_matched")


def test_keep_checkpoints_with_eval_during_training_without_the_dev_split_is_refused(workdir):
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--keep_checkpoints", "1",
                        "--eval_during_training", "dev_mismatched", cwd=workdir, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "add dev_matched" in result.stderr
    assert not (workdir / "exp" / "teacher_base_bert_mnli").exists()


def test_a_full_evaluation_keeps_the_rows_of_pruned_checkpoints(trained):
    """Defect 2: run_fine_tune_eval.py without --ckpt rewrote the table with only the
    checkpoints still on disk; its tensorboard points went with them."""
    folder = folder_of(trained)
    first = evaluate()
    for step in (1, 2):
        (folder / f"model-{step}.pt").unlink()  # as --keep_checkpoints would
    second = evaluate()
    assert second["step"].tolist() == [1, 2, 3, 4]
    assert second["checkpoint"].tolist() == ["pruned", "pruned", "on disk", "on disk"]
    pd.testing.assert_frame_equal(second[["step", "amp", "accuracy", "macro_f1"]],
                                  first[["step", "amp", "accuracy", "macro_f1"]])
    events = EventAccumulator(str(folder / "log" / "eval" / "dev_matched")).Reload()
    points = {e.step: e.value for e in events.Scalars("eval/dev_matched/accuracy")}
    assert points == pytest.approx(dict(zip(second["step"], second["accuracy"])))


def _merge_steps(folder, steps):
    from fine_tune.results import merge_results
    experiment = Experiment(folder.parent, "x", "bert", "rte")
    gold = np.array([0, 1, 1, 0])
    for step in steps:
        merge_results(experiment, get_task("rte"), "dev",
                      [{"step": step, "amp": "fp32", "accuracy": step / 100,
                        "examples_per_s": 1.0, "device": "cpu"}],
                      {(step, "fp32"): np.array([0, 1, 0, 0])}, gold, [0, 1, 2, 3])


@pytest.mark.slow
def test_two_evaluations_merging_at_once_lose_no_row(tmp_path):
    """Defect 2: an evaluation running beside training could overwrite the row the
    trainer had just merged."""
    folder = tmp_path / "exp" / "x_bert_rte"
    folder.mkdir(parents=True)
    context = multiprocessing.get_context("fork")  # (two processes; the imports inherited)
    workers = [context.Process(target=_merge_steps, args=(folder, range(start, 40, 2)))
               for start in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    table = results.read_results(folder, "dev")
    assert table["step"].tolist() == list(range(40))
    assert sorted(p.name for p in (folder / "eval_predictions" / "dev").glob("*-fp32.npy")) == \
        sorted(f"{s}-fp32.npy" for s in range(40))


def test_bf16_and_fp32_scores_are_kept_apart_and_fp32_is_preferred(trained):
    """Defect 4: bf16 and fp32 rows merged into one table without the precision, and best
    compared them."""
    folder = folder_of(trained)
    evaluate("--ckpt", "4")
    table = evaluate("--ckpt", "4", "--amp", "bf16")
    assert table[["step", "amp"]].values.tolist() == [[4, "fp32"], [4, "bf16"]]
    assert (folder / "eval_predictions" / "dev_matched" / "4-fp32.npy").is_file()
    assert (folder / "eval_predictions" / "dev_matched" / "4-bf16.npy").is_file()
    # The rule itself: per step the fp32 row; a bf16-only step competes with its bf16 row.
    hand = pd.DataFrame({"step": [2, 2, 4, 6], "amp": ["bf16", "fp32", "fp32", "bf16"],
                         "accuracy": [0.99, 0.5, 0.7, 0.6], "macro_f1": [0.0] * 4})
    hand.to_csv(folder / "results_dev_matched.csv", index=False)
    best = results.best_checkpoint(folder, MNLI)
    assert (best.step, best.amp) == (4, "fp32")
    hand.loc[3, "accuracy"] = 0.8
    hand.to_csv(folder / "results_dev_matched.csv", index=False)
    best = results.best_checkpoint(folder, MNLI)
    assert (best.step, best.amp) == (6, "bf16")


def test_per_example_predictions_reproduce_the_stored_scores(trained):
    from sklearn.metrics import accuracy_score, f1_score
    folder = folder_of(trained)
    table = evaluate()
    for row in table.itertuples():
        gold, predicted, amp, _ = results.load_predictions(folder, MNLI, "dev_matched", row.step)
        assert amp == "fp32" and predicted.dtype == np.int8 and len(predicted) == 60
        assert accuracy_score(gold, predicted) == pytest.approx(row.accuracy)
        assert f1_score(gold, predicted, average="macro") == pytest.approx(row.macro_f1)


def test_ckpt_best_in_evaluation_prediction_and_submit(trained, capsys):
    """Defects 8 and 11: run_fine_tune_eval.py and generate_test_prediction.py refused
    --ckpt best; a tie chose a checkpoint the user had not predicted with; the zip landed
    in the repository root."""
    folder = folder_of(trained)
    evaluate()
    set_scores(folder, "dev_matched", {1: 0.2, 2: 0.7, 3: 0.7, 4: 0.3})  # a tie: 2 wins
    common = "--experiment teacher_base --device_id -1 --batch_size 16"
    capsys.readouterr()
    evaluate("--ckpt", "best", split="dev_mismatched")  # (the parser of run_fine_tune_eval.py)
    out = capsys.readouterr().out
    assert "--ckpt best: model-2.pt" in out and "tied with step 3" in out
    assert pd.read_csv(folder / "results_dev_mismatched.csv")["step"].tolist() == [2]
    from fine_tune.evaluation import write_test_predictions
    from fine_tune.submit import build_parser as submit_parser
    from fine_tune.submit import pack
    for split in ("test_matched", "test_mismatched"):
        write_test_predictions(Settings(**vars(cli.predict_parser().parse_args(
            flags(common) + ["--dataset", split, "--ckpt", "best"]))))
    assert sorted(p.name for p in (folder / "predictions" / "2").iterdir()) == [
        "MNLI-m.tsv", "MNLI-mm.tsv"]
    pack(submit_parser().parse_args(["--mnli", "teacher_base", "--partial"]))  # no --output
    with zipfile.ZipFile(trained / "exp" / "glue_submission.zip") as archive:
        assert sorted(archive.namelist()) == ["MNLI-m.tsv", "MNLI-mm.tsv"]
    assert not (trained / "glue_submission.zip").exists()


def test_exported_student_truncates_long_inputs_and_relative_ptrain_ver(trained, tmp_path,
                                                                         monkeypatch):
    """Defects 5 and 9: the exported student (random embeddings: max_seq_len position rows)
    kept model_max_length 512 and crashed on long inputs; a relative --ptrain_ver was
    stored as given, so a student distilled from another folder could not find it."""
    from transformers import pipeline

    from fine_tune.export import build_parser, export
    from fine_tune.lad import distil_lad
    config = json.loads((folder_of(trained) / "config.json").read_text())
    # (the teacher was trained in another folder, with --ptrain_ver tiny-bert typed relative)
    assert os.path.isabs(config["ptrain_ver"]) and config["ptrain_ver"].endswith("/tiny-bert")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the student is distilled from another working folder
    paths = f"--exp_dir {trained / 'exp'} --data_dir {trained / 'data' / 'fine_tune'}"
    distil_lad(Settings(**vars(cli.lad_parser().parse_args(flags(
        "--teacher_exp teacher_base --tckpt 4 --experiment LAD --d_ff 64 --d_model 32 "
        "--num_attention_heads 2 --num_hidden_layers 2 --total_step 2 --warmup_step 0 "
        "--ckpt_step 2 --log_step 1 --batch_size 8 --device_id -1 --tdevice_id -1 "
        f"--gate_device_id -1 {paths}")))))
    out = tmp_path / "LAD-mnli"
    export(build_parser().parse_args(flags(
        f"--experiment LAD --ckpt 2 --out {out} --exp_dir {trained / 'exp'}")))
    exported = json.loads((out / "tokenizer_config.json").read_text())
    assert exported["model_max_length"] == 64  # the student's position rows (max_seq_len)
    classify = pipeline("text-classification", model=str(out), device=-1)
    long_input = " ".join(["word"] * 400)
    assert classify(long_input, truncation=True)[0]["label"] in MNLI.labels


def test_a_damaged_results_file_is_refused_not_overwritten(tmp_path):
    """A merge into an unreadable table would lose the rows of pruned checkpoints: refused
    in one line, the file left as it was."""
    from fine_tune.errors import UserError
    folder = tmp_path / "exp" / "x_bert_rte"
    folder.mkdir(parents=True)
    (folder / "results_dev.csv").write_text("no step column here\n1\n")
    with pytest.raises(UserError, match="damaged .*move it away"):
        _merge_steps(folder, [3])
    assert (folder / "results_dev.csv").read_text() == "no step column here\n1\n"


def test_hints_to_evaluate_name_the_exp_dir_they_looked_in(tmp_path):
    """A printed command, pasted as shown, looks where the message looked: --exp_dir is
    in it unless it is the default exp."""
    from fine_tune.errors import UserError
    folder = tmp_path / "runs" / "LAD_bert_rte"
    folder.mkdir(parents=True)
    rte = get_task("rte")
    with pytest.raises(UserError, match=r"run python run_fine_tune_eval.py --experiment LAD --task "
                                        rf"rte --dataset dev --exp_dir {tmp_path / 'runs'}, or name"):
        results.require_best(folder, "LAD", rte, "--ckpt best")
    with pytest.raises(UserError, match=r"--experiment LAD --task rte --dataset dev, or name"):
        results.require_best(Path("exp") / "LAD_bert_rte", "LAD", rte, "--ckpt best")
    with pytest.raises(UserError, match=rf"--ckpt 3 --exp_dir {tmp_path / 'runs'}$"):
        results.load_predictions(folder, rte, "dev", 3)
