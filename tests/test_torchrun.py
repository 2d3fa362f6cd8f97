"""Training, evaluation and prediction under torchrun: 2 gloo processes on the CPU give
what 1 process gives (same global batch, --dropout 0), write once, resume exactly, and
stop together with one line."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT, flags, run_script, scores, seed_flags
from forked import torchrun_forked
from test_resume import LAD, TEACHER, assert_bitwise_equal, weights, write_hook

# A short run with several checkpoints; no dropout, so the ranks' different dropout draws
# cannot differ from one process's.
SHORT = dict(total_step=6, ckpt_step=3, log_step=2, dropout=0)


def torchrun(script, *args, cwd, nproc=2, hook=None, env=None, check=True, launcher=False):
    """The ranks of `torchrun --standalone --nproc_per_node N script args` (optionally
    through the kill/poison hook of test_resume). By default forked from this process with
    torchrun's environment (tests/forked.py: no 5-7 s of imports per rank); launcher=True
    runs torchrun itself, as a user types it."""
    if hook is not None:
        script, args = write_hook(cwd), (*hook, ROOT / script, *args)
    if not launcher:
        return torchrun_forked(script, *args, cwd=cwd, nproc=nproc, env=env, check=check)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
              f"--nproc_per_node={nproc}"]
    environment = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([*launch, str(ROOT / script), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=600, env=environment | (env or {}))
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun {script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def assert_close(a, b, tolerance=1e-6):
    assert a.keys() == b.keys()
    worst = max(float((a[name] - b[name]).abs().max()) for name in a)
    assert worst <= tolerance, worst


def our_errors(stderr: str) -> list[str]:
    """Our one-line errors (torchrun adds its own failure report after them)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def work(assets, tmp_path_factory):
    """The teacher trained by one process (exp/) and by two (two/), once for the module;
    each test writes into folders of its own."""
    _, data_dir, bert = assets
    workdir = tmp_path_factory.mktemp("torchrun")
    shutil.copytree(data_dir, workdir / "data" / "fine_tune")
    os.symlink(bert, workdir / "tiny-bert")
    teacher = seed_flags(TEACHER, **SHORT)
    run_script("run_fine_tune.py", *teacher, cwd=workdir)
    torchrun("run_fine_tune.py", *teacher, "--exp_dir", "two", cwd=workdir, launcher=True)
    return workdir


@pytest.mark.slow
def test_two_processes_train_what_one_does(work):
    one, two = work / "exp" / "teacher_base_bert_mnli", work / "two" / "teacher_base_bert_mnli"
    # The teacher: 6 steps of a global batch of 32 (16 per rank, 2 micro-batches each).
    for step in (3, 6):
        assert_close(weights(one, step), weights(two, step))
    moved = max(float((weights(one, 6)[n] - weights(one, 3)[n]).abs().max()) for n in weights(one, 3))
    assert moved > 1e-4  # three steps move the weights far more than the tolerance
    assert pd.read_json(two / "config.json", typ="series")["world_size"] == 2
    assert sorted(p.name for p in two.glob("events*")) == []  # (events live in log/)
    assert len(list((two / "log").glob("events*"))) == 1      # one writer: rank 0's
    state = torch.load(two / "train_state.pt", weights_only=False)
    assert len(state["rng_by_rank"]) == 2

    # LAD, from the one-process teacher, with its gates.
    shutil.copytree(one, work / "two_lad" / "teacher_base_bert_mnli")
    lad = seed_flags(LAD, **SHORT, tckpt=6) + ["--eval_during_training", "dev_matched"]
    run_script("run_lad_distil.py", *lad, cwd=work)
    torchrun("run_lad_distil.py", *lad, "--exp_dir", "two_lad", cwd=work)
    for kind in ("model", "gate"):
        assert_close(weights(work / "exp" / "LAD_bert_mnli", 6, kind),
                     weights(work / "two_lad" / "LAD_bert_mnli", 6, kind))
    logged = [pd.read_csv(work / d / "LAD_bert_mnli" / "train_log.csv").drop(columns="examples_per_s")
              for d in ("exp", "two_lad")]
    pd.testing.assert_frame_equal(*logged, rtol=1e-5, atol=1e-6)  # the global batch's losses, gates
    # Evaluation during training, sharded: each checkpoint's scores as one process's.
    pd.testing.assert_frame_equal(*(scores(work / d / "LAD_bert_mnli" / "results_dev_matched.csv")
                                    for d in ("exp", "two_lad")))


@pytest.mark.slow
def test_evaluation_and_prediction_sharded_over_two_processes(work):
    """Each rank evaluates every other batch; rank 0 gathers them: the same metrics and
    submission rows as one process, none twice (60 dev rows in batches of 7: uneven)."""
    common = "--experiment teacher_base --model bert --task mnli --device_id -1 --exp_dir two"
    run_script("run_fine_tune_eval.py", *flags(f"{common} --dataset dev_matched --batch_size 7"),
               cwd=work)
    single = scores(work / "two" / "teacher_base_bert_mnli" / "results_dev_matched.csv")
    torchrun("run_fine_tune_eval.py", *flags(f"{common} --dataset dev_matched --batch_size 7"),
             cwd=work)
    pd.testing.assert_frame_equal(
        scores(work / "two" / "teacher_base_bert_mnli" / "results_dev_matched.csv"), single)
    predictions = work / "two" / "teacher_base_bert_mnli" / "predictions" / "6" / "MNLI-m.tsv"
    predict = f"{common} --dataset test_matched --batch_size 7 --ckpt 6"
    run_script("generate_test_prediction.py", *flags(predict), cwd=work)
    expected = predictions.read_text()
    predictions.unlink()
    torchrun("generate_test_prediction.py", *flags(predict), cwd=work)
    assert predictions.read_text() == expected and len(expected.splitlines()) == 41


@pytest.mark.slow
def test_resume_under_torchrun_is_exact_and_needs_the_same_number_of_processes(work):
    teacher = seed_flags(TEACHER, **SHORT, exp_dir="killed")
    killed = torchrun("run_fine_tune.py", *teacher, cwd=work, hook=("kill_after_step", 5),
                      check=False)
    assert killed.returncode != 0
    folder = work / "killed" / "teacher_base_bert_mnli"
    assert [p.name for p in sorted(folder.glob("model-*.pt"))] == ["model-3.pt"]
    # Another number of processes is refused in one line (here: one process).
    result = run_script("run_fine_tune.py", *teacher, "--resume", cwd=work, check=False)
    assert result.returncode != 0
    errors = our_errors(result.stderr)
    assert len(errors) == 1 and "was trained by 2: resume it with torchrun --nproc_per_node 2" in errors[0]
    resumed = torchrun("run_fine_tune.py", *teacher, "--resume", cwd=work)
    assert "resuming teacher_base_bert_mnli from step 3" in resumed.stdout
    assert_bitwise_equal(weights(folder, 6), weights(work / "two" / "teacher_base_bert_mnli", 6))


@pytest.mark.slow
def test_errors_under_torchrun_are_one_line_printed_once(work):
    # A flag error: every rank parses the same flags; rank 0 says it.
    result = torchrun("run_fine_tune.py", *seed_flags(TEACHER, **SHORT), "--lr", "x", cwd=work,
                      check=False, launcher=True)
    assert result.returncode != 0
    assert our_errors(result.stderr) == ["error: argument --lr: expected a number, got 'x' "
                                         "(see run_fine_tune.py --help)"]
    # An error found after the processes joined (a missing teacher checkpoint).
    result = torchrun("run_lad_distil.py", *seed_flags(LAD, **SHORT, tckpt=99, experiment="LAD_99"),
                      cwd=work, check=False)
    errors = our_errors(result.stderr)
    assert len(errors) == 1 and "model-99.pt not found" in errors[0]
    assert not (work / "exp" / "LAD_99_bert_mnli").exists()
    # A non-finite loss on rank 1 only: both ranks stop at the same step, rank 0 says it.
    result = torchrun("run_fine_tune.py", *seed_flags(TEACHER, **SHORT, exp_dir="nan"), cwd=work,
                      hook=("nan_at_step", 5), env={"POISON_RANK": "1"}, check=False)
    errors = our_errors(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: step 5: loss term 'ce' is not finite")
    assert [p.name for p in (work / "nan" / "teacher_base_bert_mnli").glob("model-*.pt")] == ["model-3.pt"]


def test_device_flags_that_cannot_hold_under_torchrun(monkeypatch):
    """Checked before the processes connect, as every rank would (in-process, with
    torchrun's environment)."""
    import argparse

    from fine_tune import distributed
    from fine_tune.errors import SharedError
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(device_id=-1, tdevice_id=3, gate_device_id=None)
    with pytest.raises(SharedError, match="--tdevice_id 3: under torchrun the teacher runs on "
                                          "each process's own device"):
        distributed.select_device(args)
    args = argparse.Namespace(device_id=-1, tdevice_id=-1, gate_device_id=-1)
    assert distributed.select_device(args) == torch.device("cpu")


@pytest.mark.slow
@pytest.mark.parametrize("script, extra", [
    ("run_kd_distil.py", ["--soft_weight", "0", "--hard_weight", "1"]),  # no teacher at all
    ("run_tinybert_distil.py", ["--intermediate_step", "3"]),  # stages leave parameters unused
    ("run_minilm_distil.py", ["--relation_heads", "4"]),     # relations read through hooks
    ("run_pkd_distill.py", ["--layer_map", "random"]),       # the ranks draw the same layers
])
def test_baselines_and_ablations_train_under_torchrun_as_in_one_process(work, script, extra):
    folders = {name: work / f"{script[:-3]}_{name}" for name in ("one", "two")}
    for folder in folders.values():
        shutil.copytree(work / "exp" / "teacher_base_bert_mnli", folder / "teacher_base_bert_mnli")
    student = seed_flags(LAD, **SHORT, tckpt=6, experiment="S", gate_lr=None, gate_device_id=None,
                         **({"mu": None} if "kd" in script else {})) + extra
    run_script(script, *student, "--exp_dir", folders["one"], cwd=work)
    torchrun(script, *student, "--exp_dir", folders["two"], cwd=work)
    one, two = (folders[name] / "S_bert_mnli" for name in ("one", "two"))
    # (the shards' sums round differently from one process's: a few ulps of the weights,
    # which 6 steps at lr 1e-3 move by far more)
    assert_close(weights(one, 6), weights(two, 6), tolerance=5e-6)
    logged = [pd.read_csv(f / "train_log.csv").drop(columns="examples_per_s") for f in (one, two)]
    pd.testing.assert_frame_equal(*logged, rtol=1e-5, atol=1e-6)
