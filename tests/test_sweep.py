"""python -m fine_tune.sweep: plans run in order, resumably, through every executor."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script
from forked import spawn_forked, start_forked
from slurm_cluster import Cluster
from fine_tune.errors import UserError
from fine_tune.sweep import build_parser, sweep
from fine_tune.sweep import plan as plans

# A tiny teacher (the fixture's 4-layer, 32-wide BERT) and 2-layer students.
DEFAULTS = """
[defaults]
task = "mnli"
device_id = -1
max_seq_len = 32
batch_size = 16
total_step = 6
warmup_step = 1
ckpt_step = 3
log_step = 3
lr = 5e-4
eval_during_training = "dev_matched"
eval_batch_size = 64
teacher_exp = "teacher"
tckpt = 6
num_hidden_layers = 2
d_model = 32
d_ff = 64
num_attention_heads = 2
gate_lr = 1e-4

[[run]]
script = "run_fine_tune.py"
experiment = "teacher"
ptrain_ver = "tiny-bert"
"""

PLAN = DEFAULTS + """
[[run]]
script = "run_lad_distil.py"
experiment = "LAD_s{seed}"
seed = [1, 2]

[[run]]
script = "run_pkd_distill.py"
experiment = "PKD_s{seed}"
seed = 2

[[run]]
script = "run_fine_tune_eval.py"
experiment = "teacher"
dataset = "dev_mismatched"

[[run]]
script = "generate_test_prediction.py"
experiment = "LAD_s1"
dataset = "test_matched"
ckpt = "best"
"""


def write_plan(folder: Path, text: str, name: str = "plan.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def run_sweep(workdir, monkeypatch, *argv):
    """The sweep in this process; its local runs forked from it (tests/forked.py: no 6 s
    of imports per run), each still a process of its own with its own log, exit status and
    signals. The sweep in a process of its own (to kill it): sweep_process; started as a
    user starts it, by `python -m fine_tune.sweep`: tests/test_slurm.py."""
    from fine_tune.sweep.local import LocalExecutor
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(LocalExecutor, "spawn", staticmethod(spawn_forked))
    return sweep(build_parser().parse_args([str(a) for a in argv]))


class SweepProcess:
    """`python -m fine_tune.sweep ARGS` in a process of its own and its own process group
    (to kill it and its runs together), forked from this one as its runs are (run_sweep),
    stdout and stderr in one file: returncode, poll(), wait(), communicate() as Popen's."""

    def __init__(self, workdir, argv):
        from fine_tune.sweep.local import LocalExecutor
        self.output_path = Path(workdir) / f".sweep-{time.time_ns()}.out"
        fd = os.open(self.output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        spawn = LocalExecutor.spawn
        LocalExecutor.spawn = staticmethod(spawn_forked)  # (the fork keeps it; restored here)
        try:
            self.forked = start_forked(ROOT / "fine_tune" / "sweep" / "__main__.py", *argv,
                                       cwd=workdir, env={"PYTHONUNBUFFERED": "1"}, stdout_fd=fd,
                                       stderr_fd=fd, new_session=True)
        finally:
            LocalExecutor.spawn = spawn
            os.close(fd)
        self.pid = self.forked.pid

    @property
    def returncode(self):
        return self.forked.returncode

    def poll(self):
        return self.forked.poll()

    def wait(self, timeout: float = 600):
        return self.forked.wait(timeout)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def communicate(self, timeout: float = 600) -> tuple[str, None]:
        self.wait(timeout)
        return self.output(), None


def sweep_process(workdir, *argv) -> SweepProcess:
    return SweepProcess(workdir, [str(a) for a in argv])


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before {path} appeared:\n{process.output()}")
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_lines(log: Path) -> list[str]:
    """The commands a run's log records, one per start."""
    return [line for line in log.read_text().splitlines() if "] $ " in line]


@pytest.mark.slow
def test_plan_runs_in_order_with_results_and_a_second_run_does_nothing(workdir, monkeypatch, capsys):
    plan = write_plan(workdir, PLAN)
    run_sweep(workdir, monkeypatch, plan, "--cpus", "2")
    exp = workdir / "exp"
    teacher = exp / "teacher_bert_mnli"
    for name in ("teacher", "LAD_s1", "LAD_s2", "PKD_s2"):
        folder = exp / f"{name}_bert_mnli"
        assert (folder / "model-6.pt").is_file(), name
        assert list(pd_read(folder / "results_dev_matched.csv")["step"]) == [3, 6]
        config = json.loads((folder / "config.json").read_text())
        script = "run_fine_tune.py" if name == "teacher" else \
            "run_lad_distil.py" if name.startswith("LAD") else "run_pkd_distill.py"
        # config.json records the command the sweep ran, as a user would type it
        assert config["command"].startswith(f"{ROOT / script} --experiment {name} ")
        if name != "teacher":  # each student started after its teacher's last checkpoint
            assert config["seed"] == int(name[-1])
            assert (folder / "config.json").stat().st_mtime >= (teacher / "model-6.pt").stat().st_mtime
    assert list(pd_read(teacher / "results_dev_mismatched.csv")["step"]) == [3, 6]
    predictions = list((exp / "LAD_s1_bert_mnli" / "predictions").glob("*/MNLI-m.tsv"))
    assert len(predictions) == 1
    report = (exp / "plan" / "report.md").read_text()
    assert "LAD_s1_bert_mnli" in report and "PKD_s2_bert_mnli" in report
    runs = pd_read(exp / "plan" / "runs.csv")
    assert list(runs["status"]) == ["trained"] * 4 + ["ran"] * 2
    logs = {path: path.read_text() for path in (exp / "plan" / "logs").iterdir()}
    assert len(logs) == 6

    capsys.readouterr()
    started = time.time()
    run_sweep(workdir, monkeypatch, plan, "--cpus", "2")
    assert time.time() - started < 20  # nothing starts: no process, no torch
    assert set(pd_read(exp / "plan" / "runs.csv")["status"]) == {"done"}
    assert {path: path.read_text() for path in (exp / "plan" / "logs").iterdir()} == logs
    assert "skip" in capsys.readouterr().out


def pd_read(path):
    import pandas as pd
    return pd.read_csv(path)


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_run_to_the_same_weights(workdir):
    plan = write_plan(workdir, DEFAULTS.replace("total_step = 6", "total_step = 120")
                      .replace("ckpt_step = 3", "ckpt_step = 20")
                      .replace('eval_during_training = "dev_matched"', ""))
    killed = sweep_process(workdir, plan)
    folder = workdir / "exp" / "teacher_bert_mnli"
    wait_for(folder / "model-20.pt", killed)
    kill_group(killed)
    assert not (folder / "model-120.pt").exists()
    again = sweep_process(workdir, plan)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert "resume" in output
    log = next((workdir / "exp" / "plan" / "logs").glob("1_teacher_*.log"))
    assert "--resume" not in start_lines(log)[0] and "--resume" in start_lines(log)[1]

    # The same command uninterrupted, run here (the interpreter's own, as the sweep ran it)
    command = start_lines(log)[0].split("run_fine_tune.py ", 1)[1].split()
    run_script("run_fine_tune.py", *command, "--exp_dir", "exp_whole", cwd=workdir)
    resumed = torch.load(folder / "model-120.pt")
    uninterrupted = torch.load(workdir / "exp_whole" / "teacher_bert_mnli" / "model-120.pt")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name


@pytest.mark.slow
def test_a_bad_flag_in_a_late_run_is_refused_before_anything_trains(workdir, monkeypatch):
    plan = write_plan(workdir, PLAN + """
[[run]]
script = "run_alp_distil.py"
experiment = "ALP"
alp_exp = "alp-kd-sideways"
""")
    with pytest.raises(UserError, match=r"run 7 \(run_alp_distil.py --experiment ALP\): "
                                        r"argument --alp_exp: invalid choice"):
        plans.load(plan)
    # the real command: one line, exit 2, nothing written
    result = subprocess.run([sys.executable, "-m", "fine_tune.sweep", str(plan)], cwd=workdir,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "run 7" in result.stderr, result.stderr
    assert not (workdir / "exp").exists()
    # a flag the script does not take, a placeholder naming nothing, an unknown script
    for run, message in (('script = "run_lad_distil.py"\nexperiment = "X"\nlr_gate = 1',
                          "no flag --lr_gate; did you mean gate_lr"),
                         ('script = "run_lad_distil.py"\nexperiment = "X_{mu2}"',
                          r"names \{mu2\}"),
                         ('script = "run.py"', "is not one of")):
        with pytest.raises(UserError, match=message):
            plans.load(write_plan(workdir, DEFAULTS + "[[run]]\n" + run, "other.toml"))


def test_two_runs_of_one_experiment_and_an_unsaved_teacher_step_are_refused(workdir):
    twice = DEFAULTS + '[[run]]\nscript = "run_lad_distil.py"\nexperiment = "LAD"\nmu = [1, 2]\n'
    with pytest.raises(UserError, match="both train LAD_bert_mnli"):
        plans.load(write_plan(workdir, twice))
    # A teacher the plan does not train and exp/ does not hold: refused, with a suggestion.
    typo = DEFAULTS + '[[run]]\nscript = "run_lad_distil.py"\nexperiment = "LAD"\nteacher_exp = "teachr"\n'
    with pytest.raises(UserError, match=r"run 2 .*: teacher_exp 'teachr' is neither trained by the "
                                        r"plan nor in .*exp; did you mean 'teacher'\? \(the plan "
                                        r"trains: teacher; exp/ holds: nothing\)"):
        plans.load(write_plan(workdir, typo))
    unsaved = DEFAULTS + '[[run]]\nscript = "run_lad_distil.py"\nexperiment = "LAD"\ntckpt = 4\n'
    with pytest.raises(UserError, match="--tckpt 4, which run 1 .* never saves"):
        plans.load(write_plan(workdir, unsaved))
    # The teacher's keep_checkpoints would delete the step a student reads (steps 3, 6; it
    # keeps the last one and its best).
    pruned = DEFAULTS.replace('ptrain_ver = "tiny-bert"', 'ptrain_ver = "tiny-bert"\nkeep_checkpoints = 1') \
        + '[[run]]\nscript = "run_lad_distil.py"\nexperiment = "LAD"\ntckpt = 3\n'
    with pytest.raises(UserError, match=r"--tckpt 3, which run 1 .*keep_checkpoints = 1 deletes .*"
                                        r"keeps steps 6 and its best one.*raise keep_checkpoints to 2"):
        plans.load(write_plan(workdir, pruned))
    plans.load(write_plan(workdir, pruned.replace("tckpt = 3", "tckpt = 6")))  # kept: fine


@pytest.mark.slow
def test_a_failed_teacher_skips_its_students_and_says_so(workdir, monkeypatch, capsys):
    plan = write_plan(workdir, PLAN.replace('ptrain_ver = "tiny-bert"', 'ptrain_ver = "no-such-bert"'))
    with pytest.raises(SystemExit) as stopped:
        run_sweep(workdir, monkeypatch, plan, "--cpus", "2")
    assert stopped.value.code == 1  # (2 is for a plan refused before anything ran)
    assert "error: 1 run failed" in capsys.readouterr().err
    runs = pd_read(workdir / "exp" / "plan" / "runs.csv")
    assert list(runs["status"]) == ["failed"] + ["skipped"] * 5
    assert all("run 1 (run_fine_tune.py --experiment teacher) failed" in note
               for note in runs["note"][1:4])
    out = (workdir / "exp" / "plan" / "logs").iterdir()
    assert "no-such-bert" in next(p for p in out if p.name.startswith("1_")).read_text()
    assert not (workdir / "exp" / "LAD_s1_bert_mnli").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Cluster.missing(), reason="the submitit path runs on a real Slurm cluster "
                    "in test_slurm.py here (dependencies and the missing baseline included)")
def test_submitit_local_executor_runs_a_plan_with_a_dependency(workdir, monkeypatch, capsys):
    # (its [sweep] baseline names no experiment of the sweep, as one that failed before its
    # config.json: the report is still written, without Δ columns, and says why)
    (workdir / "exp" / "plan").mkdir(parents=True)
    (workdir / "exp" / "plan" / "report.md").write_text("an older report")
    plan = write_plan(workdir, '[sweep]\nbaseline = "never_trained"\n' + DEFAULTS + """
[[run]]
script = "run_fine_tune_eval.py"
experiment = "teacher"
dataset = "dev_mismatched"
""")
    run_sweep(workdir, monkeypatch, plan, "--executor", "submitit_local", "--poll", "0.5")
    out = capsys.readouterr().out
    assert ("[sweep] baseline never_trained is not among the sweep's experiments with a "
            "config.json") in out and "no report" not in out
    report = (workdir / "exp" / "plan" / "report.md").read_text()
    assert "teacher_bert_mnli" in report and "Δ" not in report
    runs = pd_read(workdir / "exp" / "plan" / "runs.csv")
    assert list(runs["status"]) == ["trained", "ran"]
    teacher = workdir / "exp" / "teacher_bert_mnli"
    assert list(pd_read(teacher / "results_dev_mismatched.csv")["step"]) == [3, 6]
    assert (teacher / "results_dev_mismatched.csv").stat().st_mtime >= \
        (teacher / "model-6.pt").stat().st_mtime
    assert list((workdir / "exp" / "plan" / "submitit").iterdir())  # submitit's job files


SEARCH = DEFAULTS.replace('[[run]]\nscript = "run_fine_tune.py"\nexperiment = "teacher"',
                          '[[run]]\nscript = "run_fine_tune.py"\nexperiment = "tune"') \
    .replace("total_step = 6", "total_step = 40").replace("ckpt_step = 3", "ckpt_step = 20") + """
[run.search]
trials = 3
pruner = "none"
lr = "log:1e-4:1e-3"
"""


@pytest.mark.slow
def test_a_search_resumes_after_a_kill_without_repeating_finished_trials(workdir):
    import optuna
    plan = write_plan(workdir, SEARCH.replace("trials = 3", "trials = 2"))
    exp = workdir / "exp"
    killed = sweep_process(workdir, plan)
    wait_for(exp / "tune_t1_bert_mnli" / "model-20.pt", killed)  # trial 0 finished, 1 halfway
    kill_group(killed)
    again = sweep_process(workdir, plan)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    logs = exp / "plan" / "logs"
    assert len(start_lines(next(logs.glob("1.t0_*.log")))) == 1  # not repeated
    trial1 = start_lines(next(logs.glob("1.t1_*.log")))
    assert len(trial1) == 2 and "--resume" in trial1[1]
    assert sorted(p.name for p in exp.glob("tune_t*")) == [f"tune_t{k}_bert_mnli" for k in range(2)]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "plan" / "optuna.log")))
    trials = optuna.load_study(study_name="tune", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    for trial in trials:  # each objective is the trial's best dev accuracy in its store
        table = pd_read(exp / f"tune_t{trial.number}_bert_mnli" / "results_dev_matched.csv")
        assert trial.value == pytest.approx(table["accuracy"].max())
        config = json.loads((exp / f"tune_t{trial.number}_bert_mnli" / "config.json").read_text())
        assert config["lr"] == pytest.approx(trial.params["lr"])
    assert "best of 2 trials" in output


@pytest.mark.slow
def test_failed_search_trials_are_asked_again_once_the_cause_is_fixed(workdir, monkeypatch, capsys):
    import optuna
    search = SEARCH.replace("trials = 3", "trials = 1").replace("total_step = 40", "total_step = 4") \
        .replace("ckpt_step = 20", "ckpt_step = 4")
    plan = write_plan(workdir, search)
    from fine_tune.sweep.local import LocalExecutor
    with monkeypatch.context() as broken:  # the first start: every trial fails to start
        broken.setattr(LocalExecutor, "start", lambda *_: (_ for _ in ()).throw(OSError("no slot")))
        with pytest.raises(SystemExit):
            run_sweep(workdir, monkeypatch, plan, "--cpus", "2")
    assert "a failed search trial is asked again with the same values" in capsys.readouterr().err
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "exp" / "plan" / "optuna.log")))
    failed = optuna.load_study(study_name="tune", storage=storage).trials
    assert [t.state.name for t in failed] == ["FAIL"]
    run_sweep(workdir, monkeypatch, plan, "--cpus", "2")  # fixed: no SystemExit
    out = capsys.readouterr().out
    assert "trial 0 failed in an earlier start; asking its values again" in out
    trials = optuna.load_study(study_name="tune", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert [t.params for t in trials[1:]] == [t.params for t in failed]
    runs = pd_read(workdir / "exp" / "plan" / "runs.csv")
    assert "failed" not in set(runs["status"])


@pytest.mark.parametrize("plan", sorted((ROOT / "plans").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_plan_passes_its_scripts_parsers(plan):
    loaded = plans.load(plan)
    assert loaded.runs
    trained = {run.number for run in loaded.runs if run.kind == "train"}
    for run in loaded.runs:  # every student and prediction waits for a run of the plan
        if run.kind != "train" or "teacher_exp" in run.settings:
            assert run.needs and set(run.needs) <= trained, run.label


@pytest.mark.parametrize("task", ["mnli", "rte", "mrpc"])
def test_the_ablation_plans_compare_ten_students_of_one_size_against_kd(task):
    from collections import Counter
    loaded = plans.load(ROOT / "plans" / f"ablation_{task}.toml")
    students = [run for run in loaded.runs if "teacher_exp" in run.settings]
    variants = Counter((run.script, run.settings.get("layer_map"), run.settings.get("gate_mode"),
                        run.settings["soft_weight"] == 0) for run in students)
    assert len(variants) == 10 and set(variants.values()) == {3}  # three seeds each
    assert {(s, m, g) for s, m, g, _ in variants} >= {
        ("run_pkd_distill.py", m, None) for m in ("uniform", "last", "random")} | {
        ("run_lad_distil.py", None, g) for g in ("learned", "frozen", "uniform")}
    assert ("run_kd_distil.py", None, None, True) in variants  # labels only
    shapes = {tuple(run.settings[k] for k in ("num_hidden_layers", "d_model", "student_init",
                                               "init_embeddings", "lr", "epoch", "tckpt"))
              for run in students}
    assert len(shapes) == 1  # one size, initialisation and schedule
    assert loaded.baseline == "KD_s42" and {"KD_s42", "KD_s43"} <= {r.experiment for r in students}
    predicted = {run.experiment for run in loaded.runs if run.kind == "predict"}
    assert predicted == {run.experiment for run in students} | {"teacher_base"}


def test_only_this_attempts_output_can_say_the_experiment_is_trained_elsewhere(tmp_path):
    """A run's log holds every attempt: an earlier attempt's lock refusal must not make a
    run that now fails at once look like a race with another sweep (to be retried)."""
    from fine_tune.sweep.runs import Launch
    run = plans.Run("1", "run_fine_tune.py", {"experiment": "teacher"})
    log = tmp_path / "1_teacher_run_fine_tune.log"
    log.write_text("[12:00:00] $ python run_fine_tune.py --experiment teacher\nerror: "
                   "exp/teacher_bert_mnli is being trained by process 12 (started 11:59)\n")
    assert Launch(run, [], log, offset=0).trained_elsewhere()
    launch = Launch(run, [], log)  # a new attempt starts at the end of the log
    with open(log, "a") as file:
        file.write("[12:05:00] $ python run_fine_tune.py --experiment teacher\nerror: "
                   "data/fine_tune/MNLI/train.tsv not found\n")
    assert not launch.trained_elsewhere()
    assert launch.output()[-1] == "error: data/fine_tune/MNLI/train.tsv not found"
    with open(log, "a") as file:
        file.write("error: exp/teacher_bert_mnli is being trained by process 13\n")
    assert launch.trained_elsewhere()


def test_gpu_slots_set_the_device_or_launch_torchrun(monkeypatch):
    from fine_tune.sweep import LocalExecutor, command_line
    executor = LocalExecutor([2, 5, 7], None)
    one = plans.Run("1", "run_lad_distil.py", {"experiment": "A"})
    two = plans.Run("2", "run_lad_distil.py", {"experiment": "B"}, gpus=2)
    slot = executor.slots_for(one)
    assert slot == (2,) and executor.devices(one, slot) == {"device_id": 2}
    pair = executor.slots_for(two)
    assert pair == (5, 7) and executor.devices(two, pair) == {"device_id": None}
    assert executor.environment(pair)["CUDA_VISIBLE_DEVICES"] == "5,7"
    assert executor.slots_for(one) is None  # all three GPUs are busy
    command = command_line(two, ["--experiment", "B"], 2)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    executor.release(slot)
    assert executor.slots_for(one) == (2,)
    with pytest.raises(UserError, match="asks for 4 GPUs"):
        executor.slots_for(plans.Run("3", "run_lad_distil.py", {"experiment": "C"}, gpus=4))
    cpus = LocalExecutor(None, 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpus.devices(one, cpus.slots_for(one)) == {"device_id": -1}
    assert cpus.environment((0,))["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def scheduled(monkeypatch, tmp_path, executor, runs, ticks):
    """Run `runs` through the real scheduler and `executor`, each run a stand-in process
    that ends after `ticks[experiment]` polls; returns (experiment, slot, environment)
    of each start, in order."""
    from fine_tune.sweep import Sweep
    monkeypatch.setattr(plans, "state", lambda run: ("new", ""))
    started = []

    class StandIn:
        def __init__(self, experiment):
            self.left = ticks[experiment]

        def poll(self):
            self.left -= 1
            return 0 if self.left <= 0 else None

    def start(launch):
        env = executor.environment(launch.slot)
        started.append((launch.run.experiment, launch.slot, env.get("OMP_NUM_THREADS"),
                        executor.describe(launch.slot)))
        launch.handle = StandIn(launch.run.experiment)
    monkeypatch.setattr(executor, "start", start)
    Sweep(plans.Plan(tmp_path / "plan.toml", runs, tmp_path), executor, tmp_path, poll=0).execute()
    return started


def test_a_run_waiting_for_several_gpus_is_not_overtaken_by_one_gpu_runs(monkeypatch, tmp_path):
    from fine_tune.sweep import LocalExecutor
    runs = [plans.Run("1", "run_fine_tune.py", {"experiment": "A"}),
            plans.Run("2", "run_fine_tune.py", {"experiment": "B"}, gpus=2),
            *(plans.Run(str(n), "run_fine_tune.py", {"experiment": name})
              for n, name in ((3, "C"), (4, "D"), (5, "E")))]
    ticks = {"A": 3, "B": 3, "C": 5, "D": 2, "E": 2}
    started = scheduled(monkeypatch, tmp_path, LocalExecutor([0, 1], None), runs, ticks)
    # B waits for both GPUs and C does not take the one A leaves free meanwhile.
    assert [(name, slot) for name, slot, *_ in started] == [
        ("A", (0,)), ("B", (1, 0)), ("C", (1,)), ("D", (0,)), ("E", (0,))]


def test_a_plan_with_gpus_needs_gpu_slots_locally(workdir, monkeypatch):
    """gpus = 2 is never dropped silently: without --gpus the local executor refuses."""
    monkeypatch.chdir(workdir)
    plan = write_plan(workdir, DEFAULTS.replace('ptrain_ver = "tiny-bert"', 'ptrain_ver = "tiny-bert"\ngpus = 2'))
    for extra in ([], ["--cpus", "2"], ["--dry_run"]):
        with pytest.raises(UserError, match=r"run 1 .* has gpus = 2, a torchrun launch over that "
                                            r"many GPUs: pass --gpus \(e.g. --gpus 0,1\)"):
            sweep(build_parser().parse_args([str(plan), *extra]))


def test_a_run_alone_gets_the_threads_of_the_idle_cpu_slots(monkeypatch, tmp_path):
    from fine_tune.sweep import LocalExecutor
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    teacher = plans.Run("1", "run_fine_tune.py", {"experiment": "T"})
    students = [plans.Run(str(n), "run_lad_distil.py", {"experiment": f"S{n}"}, needs=["1"])
                for n in (2, 3)]
    started = scheduled(monkeypatch, tmp_path, LocalExecutor(None, 2), [teacher, *students],
                        {"T": 2, "S2": 2, "S3": 2})
    # The teacher, which both students wait for, runs on all four cores; then the
    # students share them.
    assert started == [("T", (0, 1), "4", "CPU slots 1,2, 4 threads"),
                       ("S2", (0,), "2", "CPU slot 1"), ("S3", (1,), "2", "CPU slot 2")]


def test_an_experiment_trained_with_other_settings_is_not_overwritten(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    plan = plans.load(write_plan(workdir, DEFAULTS))
    run = plan.runs[0]
    folder = run.folder()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(dict(run.settings, lr=0.1, total_step=6)))
    state, why = plans.state(run)
    assert state == "conflict" and "--lr 0.1 there, 0.0005 planned" in why
    # --dry_run says what differs, as the run's failure would.
    capsys.readouterr()
    sweep(build_parser().parse_args(["plan.toml", "--dry_run"]))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("   1. "))
    assert line.endswith(f"-> conflict ({why})")
    (folder / "config.json").write_text(json.dumps(dict(run.settings, total_step=6)))
    assert plans.state(run) == ("resume", f"{folder} stopped before its first checkpoint (of 6 steps)")
    (folder / "model-3.pt").write_bytes(b"")
    assert plans.state(run) == ("resume", f"{folder} stopped; its last checkpoint is step 3 of 6")
    (folder / "model-6.pt").write_bytes(b"")
    assert plans.state(run) == ("resume", f"{folder} stopped while scoring its last checkpoint (step 6)")
    (folder / "results_dev_matched.csv").write_text("step,amp,accuracy\n6,fp32,0.5\n")
    assert plans.state(run)[0] == "done"
    overwrite = plans.load(write_plan(workdir, DEFAULTS.replace(
        'ptrain_ver = "tiny-bert"', 'ptrain_ver = "tiny-bert"\noverwrite = true\nlr = 0.2'),
        "other.toml")).runs[0]
    assert plans.state(overwrite)[0] == "new"


def test_a_trial_below_the_median_of_earlier_trials_is_pruned(workdir, monkeypatch):
    import optuna
    monkeypatch.chdir(workdir)
    from fine_tune.sweep import Launch, Search, Sweep
    plan = plans.load(write_plan(workdir, SEARCH.replace('pruner = "none"', 'pruner = "median"')))
    runner = Sweep(plan, executor=None, folder=workdir / "exp" / "plan", poll=1)
    search = Search(runner, plan.runs[0])
    for value in (0.6, 0.7):  # two finished trials scored 0.6, then 0.7, at steps 20 and 40
        trial = search.study.ask(search.space)
        trial.report(value, 20)
        trial.report(value, 40)
        search.study.tell(trial, value)
    launches = []
    for score in (0.7, 0.5):  # a trial above the median (0.65) at step 20, one below it
        trial = search.study.ask(search.space)
        run = plans.trial_run(plan.runs[0], trial.number, trial.params)
        search.running[run.number] = (trial, set())
        run.folder().mkdir(parents=True)
        (run.folder() / "results_dev_matched.csv").write_text(f"step,amp,accuracy\n20,fp32,{score}\n")
        launches.append(Launch(run, [], workdir / "log"))
    assert not search.prune(launches[0])
    assert search.study.trials[2].intermediate_values == {20: 0.7}
    assert search.prune(launches[1])
    assert search.study.trials[3].state == optuna.trial.TrialState.PRUNED
    assert runner.outcomes["1.t3"].status == "pruned"


def test_an_evaluation_without_task_waits_for_the_run_that_trains_its_experiment(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    plan = plans.load(write_plan(workdir, DEFAULTS.replace('task = "mnli"', 'task = "mnli"\n') + """
[[run]]
script = "run_fine_tune.py"
experiment = "rte_teacher"
task = "rte"
ptrain_ver = "tiny-bert"
eval_during_training = "dev"

[[run]]
script = "run_fine_tune_eval.py"
experiment = "rte_teacher"
dataset = "dev"
task = false
"""))
    evaluation = plan.runs[-1]
    assert "--task" not in evaluation.argv() and evaluation.needs == ["2"]
    folder = workdir / "exp" / "rte_teacher_bert_rte"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": "rte"}))
    assert evaluation.folder() == Path("exp") / "rte_teacher_bert_rte"
    assert evaluation.task().name == "rte"


def test_a_search_without_dev_scores_during_training_is_refused_at_once(workdir):
    with pytest.raises(UserError, match='add eval_during_training = "dev_matched" to the run'):
        plans.load(write_plan(workdir, SEARCH.replace('eval_during_training = "dev_matched"', "")))
    with pytest.raises(UserError, match=r'lr = \'log:0:1e-3\': write "log:LOW:HIGH"'):
        plans.load(write_plan(workdir, SEARCH.replace('lr = "log:1e-4:1e-3"', 'lr = "log:0:1e-3"'),
                              "other.toml"))


@pytest.mark.slow
def test_slurm_jobs_carry_their_own_dependencies_time_and_gpus(workdir, monkeypatch):
    """The sbatch files the sweep submits, through a stand-in sbatch (no cluster here)."""
    from fine_tune.sweep import Launch, SubmititExecutor
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
n=$(cat {bin_dir}/n 2>/dev/null || echo 100); n=$((n+1)); echo $n > {bin_dir}/n
echo "Submitted batch job $n"
""")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(workdir)
    plan = plans.load(write_plan(workdir, DEFAULTS + """
[[run]]
script = "run_lad_distil.py"
experiment = "student"

[[run]]
script = "run_fine_tune.py"
experiment = "other"
ptrain_ver = "tiny-bert"
gpus = 4
"""))
    args = build_parser().parse_args(["plan.toml", "--executor", "slurm", "--slurm_time", "2:00:00",
                                      "--slurm_gpus_per_run", "2", "--slurm_option", "account=nlp"])
    executor = SubmititExecutor(workdir / "exp" / "plan", "slurm", args)
    launches = [Launch(run, run.argv(), workdir / "exp" / "plan" / "logs" / f"{run.number}.log")
                for run in plan.runs]
    for launch in launches:
        executor.start(launch)
    scripts = {int(p.name.split("_")[0]): p.read_text()
               for p in (workdir / "exp" / "plan" / "submitit").glob("*_submission.sh")}
    teacher, student, other = (scripts[n] for n in sorted(scripts))
    assert "--dependency" not in teacher and "#SBATCH --dependency=afterok:101" in student
    assert "--dependency" not in other  # (submitit keeps parameters between jobs: cleared)
    for text in scripts.values():
        assert "#SBATCH --time=120" in text and "#SBATCH --account=nlp" in text
        assert "#SBATCH --kill-on-invalid-dep=yes" in text
    assert "#SBATCH --gpus-per-node=2" in teacher and "#SBATCH --gpus-per-node=4" in other
    assert [launch.handle.submission().function.gpus for launch in launches] == [2, 2, 4]
    # An evaluation asks for no GPU unless the plan gives it gpus; --slurm_gpus_per_run 0:
    # CPU-only training jobs too.
    cpu = build_parser().parse_args(["plan.toml", "--executor", "slurm", "--slurm_time", "10",
                                     "--slurm_gpus_per_run", "0"])
    evaluation = plans.Run("9", "run_fine_tune_eval.py", {"experiment": "other"})
    told = plans.Run("10", "run_fine_tune_eval.py", {"experiment": "other"}, gpus=1, gpus_given=True)
    assert [executor.job_gpus(r) for r in (plan.runs[0], evaluation, told)] == [2, 0, 1]
    cpu_executor = SubmititExecutor(workdir / "exp" / "cpu", "slurm", cpu)
    assert [cpu_executor.job_gpus(r) for r in (*plan.runs, evaluation)] == [0, 0, 4, 0]
    launch = Launch(plan.runs[0], plan.runs[0].argv(), workdir / "exp" / "cpu" / "1.log")
    cpu_executor.start(launch)
    script = next((workdir / "exp" / "cpu" / "submitit").glob("*_submission.sh")).read_text()
    assert "gpus" not in script and launch.handle.submission().function.gpus == 0
    with pytest.raises(UserError, match="needs --slurm_time"):
        sweep(build_parser().parse_args(["plan.toml", "--executor", "slurm"]))
    # A sweep started again watches the jobs an earlier start submitted that Slurm still
    # has (here: the teacher's, 101), and submits only the others again.
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '101 RUNNING'\n")
    (bin_dir / "squeue").chmod(0o755)
    recorded = json.loads((workdir / "exp" / "plan" / "slurm_jobs.json").read_text())
    assert recorded == {"1 run_fine_tune.py teacher": "101", "2 run_lad_distil.py student": "102",
                        "3 run_fine_tune.py other": "103"}
    again = SubmititExecutor(workdir / "exp" / "plan", "slurm", args)
    relaunched = [Launch(run, run.argv(), workdir / "exp" / "plan" / "logs" / f"{run.number}.log")
                  for run in plan.runs]
    for launch in relaunched:
        again.start(launch)
    assert [launch.handle.job_id for launch in relaunched] == ["101", "105", "106"]  # (104: exp/cpu)
    assert "#SBATCH --dependency=afterok:101" in next(
        (workdir / "exp" / "plan" / "submitit").glob("105_submission.sh")).read_text()
    (bin_dir / "srun").unlink()  # no Slurm here: one line, not submitit's traceback
    monkeypatch.setenv("PATH", str(bin_dir))  # (a machine with Slurm installed has a real srun)
    with pytest.raises(UserError, match="no Slurm on this machine"):
        SubmititExecutor(workdir / "exp" / "plan", "slurm", args)


@pytest.mark.parametrize("text, message", [
    ('defaults = "x"\n[[run]]\nscript = "run_fine_tune.py"', "defaults must be a table"),
    ('run = ["a"]', r"no \[\[run\]\] tables"),
    ('[defaults]\ngate_lrr = 1\n[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T"',
     r"\[defaults\] gate_lrr is a flag of none of the entry scripts; did you mean gate_lr\?"),
    ('[[run]]\nscript = ["run_fine_tune.py"]', "is not one of"),
    ('[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T_{seed.foo}"\nseed = 1', "not a valid pattern"),
    ('[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T"\nseed = []', "lists no value"),
    ('[sweep]\nbaseline = 3\n[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T"', "baseline is an experiment name"),
    ('[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T"\neval_during_training = "dev_matched"\n'
     '[run.search]\ntrials = 2\namp = ["fp32", "bogus"]', "argument --amp: invalid choice: 'bogus'"),
    ('[[run]]\nscript = "run_fine_tune.py"\nexperiment = "T"\neval_during_training = "dev_matched"\n'
     '[run.search]\ntrials = 2\ndropout = "float:0.05:1.5"', "argument --dropout: must be in"),
])
def test_a_malformed_plan_is_one_line(workdir, text, message):
    with pytest.raises(UserError, match=message):
        plans.load(write_plan(workdir, text))


def test_a_run_another_process_is_training_waits_instead_of_failing(workdir, monkeypatch):
    import fcntl
    monkeypatch.chdir(workdir)
    run = plans.load(write_plan(workdir, DEFAULTS)).runs[0]
    folder = run.folder()
    folder.mkdir(parents=True)
    with open(folder / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process holds it
        assert plans.state(run)[0] == "elsewhere"
    assert plans.state(run)[0] == "new"  # released
