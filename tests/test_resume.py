"""Trustworthy runs: a run killed with SIGKILL (mid-training or mid-save) and resumed ends
bitwise equal to an uninterrupted run; a non-finite loss stops the run cleanly; write
failures keep what was saved before."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script, seed_flags
from forked import run_forked
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment

TEACHER = """--experiment teacher_base --model bert --ptrain_ver tiny-bert --task mnli --dataset train
  --num_class 3 --accum_step 2 --batch_size 32 --ckpt_step 5 --dropout 0.1 --log_step 3
  --lr 1e-3 --max_seq_len 64 --device_id -1 --seed 42 --total_step 14 --warmup_step 2"""

LAD = """--tmodel bert --teacher_exp teacher_base --tckpt 14 --experiment LAD --model bert --task mnli
  --accum_step 1 --batch_size 32 --ckpt_step 5 --d_ff 64 --d_model 32 --dropout 0.1 --log_step 3
  --lr 1e-3 --gate_lr 1e-3 --num_attention_heads 2 --num_hidden_layers 2 --total_step 14
  --warmup_step 2 --seed 42 --device_id -1 --tdevice_id -1 --gate_device_id -1 --softmax_temp 10
  --mu 500"""

# Runs an entry script with a hook installed: kill the process with SIGKILL after the
# optimiser step of step N, or while renaming a given checkpoint into place, or during the
# Nth scoring of a checkpoint on a split, or poison a loss term at step N.
HOOK = r"""
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
import fine_tune.io, fine_tune.training.loop as trainer, fine_tune.training.optim as optim
mode, arg, script = sys.argv[1], sys.argv[2], sys.argv[3]
if mode in ("kill_after_step", "interrupt_after_step"):  # SIGKILL, or Ctrl-C's SIGINT
    step, count = optim.TrainableGroup.step, [0]
    def killing_step(self):
        step(self)
        if self.name == "model":
            count[0] += 1
            if count[0] == int(arg):
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill_after_step" else signal.SIGINT)
    optim.TrainableGroup.step = killing_step
elif mode == "kill_during_save":
    replace = fine_tune.io.os.replace
    def killing_replace(src, dst):
        if os.path.basename(dst) == arg:
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    fine_tune.io.os.replace = killing_replace
elif mode == "kill_during_scoring":  # the arg-th checkpoint scored (each split counts)
    import fine_tune.evaluation as evaluation
    score, calls = evaluation.score, [0]
    def killing_score(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(arg):
            os.kill(os.getpid(), signal.SIGKILL)
        return score(*args, **kwargs)
    evaluation.score = killing_score
elif mode == "nan_at_step":
    guard_update, calls = trainer.NonFiniteGuard.update, [0]
    accumulate = trainer.accumulate_gradients
    def poisoned(run, rows, accum_step, *statistics):
        calls[0] += 1
        terms = accumulate(run, rows, accum_step, *statistics)
        # (under torchrun, only on the rank POISON_RANK names, if set)
        if calls[0] >= int(arg) and os.environ.get("POISON_RANK", os.environ.get("RANK")) == os.environ.get("RANK"):
            name = sorted(terms)[-1]
            terms[name] = terms[name] * float("nan")
        return terms
    trainer.accumulate_gradients = poisoned
sys.argv = [script] + sys.argv[4:]
runpy.run_path(script, run_name="__main__")
"""


def write_hook(cwd) -> Path:
    """HOOK as cwd/hook.py: run it as the script, with MODE ARG SCRIPT FLAGS... as flags."""
    hook = Path(cwd) / "hook.py"
    hook.write_text(HOOK.format(root=str(ROOT)))
    return hook


def run_hooked(mode, arg, script, args, cwd, fork=True):
    """The script in a process of its own, through the hook: forked from this one
    (tests/forked.py), or a new interpreter with fork=False (CUDA cannot be forked)."""
    if fork:
        return run_forked(write_hook(cwd), mode, arg, ROOT / script, *args, cwd=cwd)
    code = HOOK.format(root=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, mode, str(arg), str(ROOT / script), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def weights(folder, step, kind="model"):
    return torch.load(folder / f"{kind}-{step}.pt", weights_only=True)


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_teacher_killed_mid_training_resumes_bitwise(workdir):
    work = workdir
    run_script("run_fine_tune.py", *seed_flags(TEACHER, exp_dir="ref"), cwd=work)
    killed = run_hooked("kill_after_step", 7, "run_fine_tune.py", seed_flags(TEACHER), work)
    assert killed.returncode == -9
    folder = work / "exp" / "teacher_base_bert_mnli"
    assert Experiment(work / "exp", "teacher_base", "bert", "mnli").checkpoint_steps() == [5]
    assert (folder / ".lock").is_file()  # left by the killed run; its lock died with it (below)
    # Without --resume the folder is not touched.
    again = run_script("run_fine_tune.py", *seed_flags(TEACHER), cwd=work, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--resume", cwd=work)
    assert "resuming teacher_base_bert_mnli from step 5" in resumed.stdout
    reference = work / "ref" / "teacher_base_bert_mnli"
    for step in (10, 14):
        assert_bitwise_equal(weights(folder, step), weights(reference, step))


@pytest.mark.slow
def test_teacher_killed_while_saving_keeps_the_previous_checkpoint(workdir):
    work = workdir
    run_script("run_fine_tune.py", *seed_flags(TEACHER, exp_dir="ref"), cwd=work)
    killed = run_hooked("kill_during_save", "model-10.pt", "run_fine_tune.py", seed_flags(TEACHER), work)
    assert killed.returncode == -9
    folder = work / "exp" / "teacher_base_bert_mnli"
    names = sorted(p.name for p in folder.iterdir())
    assert "model-10.pt" not in names and "model-5.pt" in names
    assert any(n.startswith(".model-10.pt.") and n.endswith(".tmp") for n in names)  # the torn write
    assert torch.load(folder / "train_state.pt", weights_only=False)["step"] == 5
    assert Experiment(work / "exp", "teacher_base", "bert", "mnli").checkpoint_steps() == [5]
    assert_bitwise_equal(weights(folder, 5), weights(work / "ref" / "teacher_base_bert_mnli", 5))
    run_script("run_fine_tune.py", *seed_flags(TEACHER), "--resume", cwd=work)
    assert not list(folder.glob(".*.tmp"))  # leftovers of the torn write are cleaned up
    assert_bitwise_equal(weights(folder, 14), weights(work / "ref" / "teacher_base_bert_mnli", 14))


@pytest.mark.slow
def test_lad_killed_mid_training_resumes_bitwise(workdir):
    work = workdir
    run_script("run_fine_tune.py", *seed_flags(TEACHER), cwd=work)
    shutil.copytree(work / "exp", work / "ref")
    run_script("run_lad_distil.py", *seed_flags(LAD, exp_dir="ref"), cwd=work)
    killed = run_hooked("kill_after_step", 8, "run_lad_distil.py", seed_flags(LAD), work)
    assert killed.returncode == -9
    run_script("run_lad_distil.py", *seed_flags(LAD, log_step=1, gate_device_id=-1), "--resume",
               cwd=work)
    folder, reference = work / "exp" / "LAD_bert_mnli", work / "ref" / "LAD_bert_mnli"
    for kind in ("model", "gate"):
        assert_bitwise_equal(weights(folder, 14, kind), weights(reference, 14, kind))


def test_resume_refuses_changed_settings(workdir):
    work = workdir
    run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=5), cwd=work)
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=5, lr=2e-3, batch_size=16),
                        "--resume", cwd=work, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "--batch_size 32 -> 16" in line and "--lr 0.001 -> 0.002" in line
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=5), "--resume",
                        "--overwrite", cwd=work, check=False)
    assert result.returncode == 2 and "pass one" in result.stderr


def test_a_run_recorded_before_a_flag_existed_resumes_with_its_old_value(tmp_path):
    """config.json of an experiment trained before --group_by_length existed has no such
    key: resuming with the flag off (what it did) is accepted, with it on refused."""
    base = {"task": "mnli", "max_seq_len": 32, "ptrain_ver": "x", "num_class": 3, "lr": 1.0}
    experiment = Experiment(tmp_path, "old", "bert", "mnli")
    with experiment.training(base, overwrite=False):
        experiment.save_checkpoint({"w": torch.ones(3)}, 5)
    with experiment.training(base | {"group_by_length": False}, overwrite=False, resume=True):
        pass
    with pytest.raises(UserError, match=r"--group_by_length False -> True"):
        with experiment.training(base | {"group_by_length": True}, overwrite=False, resume=True):
            pass
    # BERT-PKD's and LAD's ablation flags: a run from before them was uniform and learned.
    with experiment.training(base | {"layer_map": "uniform", "gate_mode": "learned"},
                             overwrite=False, resume=True):
        pass
    with pytest.raises(UserError, match=r"--gate_mode 'learned' -> 'frozen'"):
        with experiment.training(base | {"gate_mode": "frozen"}, overwrite=False, resume=True):
            pass


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(workdir):
    work = workdir
    result = run_hooked("nan_at_step", 7, "run_fine_tune.py", seed_flags(TEACHER, log_step=100), work)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: step 7: loss term 'ce' is not finite")
    assert "model-5.pt is the last good checkpoint" in line
    assert Experiment(work / "exp", "teacher_base", "bert", "mnli").checkpoint_steps() == [5]
    assert all(torch.isfinite(v).all() for v in weights(work / "exp" / "teacher_base_bert_mnli", 5).values())


def test_a_failed_write_keeps_what_was_saved_before(tmp_path, monkeypatch):
    experiment = Experiment(tmp_path, "x", "bert", "mnli")
    with experiment.training({"lr": 1.0}, overwrite=False):
        experiment.save_checkpoint({"w": torch.ones(3)}, 5)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("fine_tune.io.os.fsync", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*model-10.pt \(No space left on device\): "
                                        r"free disk space .* files saved before are intact"):
        experiment.save_checkpoint({"w": torch.zeros(3)}, 10)
    assert experiment.checkpoint_steps() == [5]
    assert torch.equal(experiment.load_checkpoint(5)["w"], torch.ones(3))
    assert sorted(p.name for p in experiment.path.iterdir()) == [".lock", "config.json", "model-5.pt"]


def test_unwritable_experiment_folder_is_a_clear_error(workdir):
    (workdir / "blocked").write_text("a file, not a folder")
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER, exp_dir="blocked/exp"), cwd=workdir,
                        check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot create blocked/exp/teacher_base_bert_mnli" in result.stderr
    assert "check --exp_dir" in result.stderr


def test_an_experiment_from_an_older_version_still_resumes(workdir):
    """config.json written before the flags of this version existed (no eval/keep/tf32/
    compile settings, no world_size, no method): --resume with today's flags is accepted,
    and a real change is still refused."""
    from fine_tune import cli
    args = vars(cli.teacher_parser().parse_args(seed_flags(TEACHER)))
    older = {k: v for k, v in args.items() if k not in {
        "eval_during_training", "eval_batch_size", "keep_checkpoints", "tf32", "compile"}}
    experiment = Experiment(workdir / "exp", "old", "bert", "mnli")
    with experiment.training(older | {"max_seq_len": 64, "ptrain_ver": "x", "num_class": 3},
                             overwrite=False):
        pass
    today = args | {"max_seq_len": 64, "ptrain_ver": "x", "num_class": 3, "world_size": 1,
                    "method": "teacher", "compile": True}
    experiment._check_same_run(today)
    with pytest.raises(UserError, match="--lr 0.001 -> 0.002"):
        experiment._check_same_run(today | {"lr": 0.002})
