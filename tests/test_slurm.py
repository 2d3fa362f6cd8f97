"""`python -m fine_tune.sweep PLAN --executor slurm` on a real Slurm cluster started by the
tests (tests/slurm_cluster.py: slurmctld, slurmd and munged of Debian's slurm-wlm, fake
GPUs, no accounting database): a plan ends with the same weights, scores and files as the
same commands run here, in CPU-only jobs; a failing teacher's dependants are cancelled and
named skipped; a training job requeued by Slurm (scontrol requeue, as a node failure or an
administrator does) continues from its checkpoint to weights bitwise equal to an
uninterrupted run, while the sweep waits for it; jobs pre-empted by the high-priority
partition and one warned of its time limit do the same; a killed sweep started again
watches its jobs instead of submitting them twice; --slurm_array_parallelism holds; a run
with gpus = 2 runs under torchrun in a two-GPU job.

Without Slurm installed (or without root) these tests are skipped, and say how to run
them; under CI=true that fails instead.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from conftest import ROOT, run_script, scores
from slurm_cluster import Cluster, ClusterMissing
from test_resume import assert_bitwise_equal, weights

pytestmark = pytest.mark.slow

COMMON = """[defaults]
task = "mnli"
max_seq_len = 32
batch_size = 16
total_step = 6
warmup_step = 1
ckpt_step = 3
log_step = 3
lr = 1e-3
"""
STUDENT = """teacher_exp = "{teacher}"
tckpt = 6
num_hidden_layers = 2
d_model = 32
d_ff = 64
num_attention_heads = 2
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = Cluster.missing()
    if why:
        message = (f"no Slurm test cluster here ({why}): as root, apt-get install slurm-wlm "
                   "munge, then python -m pytest tests/test_slurm.py")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        started = Cluster(tmp_path_factory.mktemp("slurm")).start()
    except ClusterMissing as error:
        pytest.skip(str(error))
    yield started
    started.stop()


@pytest.fixture
def work(cluster, assets, tmp_path, monkeypatch):
    _, data_dir, bert = assets
    shutil.copytree(data_dir, tmp_path / "data" / "fine_tune")
    os.symlink(bert, tmp_path / "tiny-bert")
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sweep_on_slurm(work, plan_text, *extra, check=True):
    """The sweep as a user starts it, in a process of its own (it installs signal handlers)."""
    (work / "plan.toml").write_text(plan_text)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fine_tune.sweep", "plan.toml", "--executor",
                             "slurm", "--slurm_time", "10", "--poll", "0.5", *extra], cwd=work,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_plan_on_slurm_ends_as_here_through_a_requeue_and_cancels_a_failed_teachers_chain(
        work, cluster):
    """teacher -> student (scored on dev as it trains) -> prediction, in CPU-only jobs, the
    teacher's job requeued by Slurm after its first checkpoint; and a teacher that fails,
    whose student and that student's prediction (a dependant's dependant) are cancelled."""
    # (its [sweep] baseline names no experiment of the sweep, as one that failed before its
    # config.json: the report is still written, without Δ columns, and says why)
    plan = "[sweep]\nbaseline = \"never_trained\"\n" + COMMON + f"""
[[run]]
script = "run_fine_tune.py"
experiment = "teacher"
ptrain_ver = "tiny-bert"
total_step = 150
ckpt_step = 10
log_step = 50

[[run]]
script = "run_lad_distil.py"
experiment = "LAD"
eval_during_training = "dev_matched"
tckpt = 150
{STUDENT.format(teacher="teacher").replace("tckpt = 6", "")}
[[run]]
script = "generate_test_prediction.py"
experiment = "LAD"
dataset = "test_matched"
ckpt = 6

[[run]]
script = "run_fine_tune.py"
experiment = "broken"
ptrain_ver = "no-such-bert"

[[run]]
script = "run_lad_distil.py"
experiment = "broken_LAD"
{STUDENT.format(teacher="broken")}
[[run]]
script = "generate_test_prediction.py"
experiment = "broken_LAD"
dataset = "test_matched"
task = "mnli"
ckpt = 6
"""
    process = sweep_on_slurm(work, plan, "--slurm_gpus_per_run", "0")
    teacher = work / "exp" / "teacher_bert_mnli"
    deadline = time.time() + 300
    while not (teacher / "model-10.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    job = next(job for job, state in cluster.queue().items() if state == "RUNNING"
               and "teacher" in cluster.run("squeue", "-h", "-o", "%j", "-j", job).stdout)
    cluster.requeue(job)  # as a node failure, an administrator or a pre-emption does
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 1 and (work / "exp" / "plan" / "runs.csv").is_file(), output
    runs = pd.read_csv(work / "exp" / "plan" / "runs.csv")
    assert list(runs["status"]) == ["trained", "trained", "ran", "failed", "skipped", "skipped"], output
    assert "note" in runs and "run 4 (run_fine_tune.py --experiment broken) failed" in runs["note"][5]
    assert "Bypassing sacct" not in output and "accounting storage is disabled" not in output
    assert ("[sweep] baseline never_trained is not among the sweep's experiments with a "
            "config.json") in output and "no report" not in output
    report = (work / "exp" / "plan" / "report.md").read_text()
    assert "LAD_bert_mnli" in report and "Δ" not in report
    assert cluster.queue() == {}  # nothing left queued: the dependants were cancelled
    scripts = sorted((work / "exp" / "plan" / "submitit").glob("*_submission.sh"))
    assert scripts and not any("gpus" in p.read_text() for p in scripts)  # CPU-only jobs

    # The requeued teacher ran its command again with --resume, from its last checkpoint.
    log = (work / "exp" / "plan" / "logs" / "1_teacher_run_fine_tune.log").read_text()
    attempts = [line for line in log.splitlines() if "$ " in line and "run_fine_tune.py" in line]
    assert len(attempts) == 2 and "--resume" not in attempts[0] and "--resume" in attempts[1]
    assert "resuming teacher_bert_mnli from step" in log

    # The same commands here, in this process: the same weights, scores and files.
    for line in output.splitlines():
        if line.strip().startswith("$ python ") and "broken" not in line:
            command = line.strip()[len("$ python "):].split()
            run_script(command[0], *command[1:], "--exp_dir", "here", cwd=work)
    assert_bitwise_equal(weights(teacher, 150), weights(work / "here" / "teacher_bert_mnli", 150))
    for step in (3, 6):
        assert_bitwise_equal(weights(work / "exp" / "LAD_bert_mnli", step),
                             weights(work / "here" / "LAD_bert_mnli", step))
    pd.testing.assert_frame_equal(scores(work / "exp" / "LAD_bert_mnli" / "results_dev_matched.csv"),
                                  scores(work / "here" / "LAD_bert_mnli" / "results_dev_matched.csv"))
    submitted = sorted((work / "exp" / "LAD_bert_mnli" / "predictions").rglob("*.tsv"))
    assert submitted and [p.read_text() for p in submitted] == \
        [p.read_text() for p in sorted((work / "here" / "LAD_bert_mnli" / "predictions").rglob("*.tsv"))]


def jobs_of_the_sweep(cluster) -> dict:
    """{job id: (name, state)} of the sweep's jobs Slurm has queued or running."""
    out = cluster.run("squeue", "-h", "-o", "%i %T %j").stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {job: (name, state) for job, state, name in rows if name.startswith("sweep-")}


def until(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def job_of(cluster, name: str) -> str:
    return next(job for job, (job_name, _) in jobs_of_the_sweep(cluster).items()
                if job_name == f"sweep-{name}")


def restarts(cluster, job: str) -> tuple[int, str]:
    """(how often Slurm requeued the job, its state)."""
    shown = dict(item.split("=", 1) for item in
                 cluster.run("scontrol", "-o", "show", "job", job).stdout.split() if "=" in item)
    return int(shown.get("Restarts", 0)), shown.get("JobState", "")


def release(cluster, job: str, times: int) -> None:
    """Once the job has been requeued `times` times, make it eligible at once (Slurm holds
    a requeued job back about two minutes)."""
    until(lambda: restarts(cluster, job)[0] >= times and restarts(cluster, job)[1] in ("PENDING", "RUNNING"),
          f"job {job} requeued")
    if restarts(cluster, job)[1] == "PENDING":
        cluster.release(job)


def test_jobs_survive_preemption_a_time_limit_and_a_killed_sweep(work, cluster):
    """Two teachers at most two jobs at a time (--slurm_array_parallelism 2); the sweep
    killed while they run; both pre-empted by a job of the high-priority partition (Slurm
    requeues them); the sweep started again watches them instead of submitting them again;
    one then gets the signal Slurm sends before a time limit (USR2, sent here with scancel,
    as a real limit takes minutes to come) and requeues itself with --resume; a third run
    with gpus = 2 gets two GPUs and runs under torchrun in its job. Every teacher ends with
    the weights of an uninterrupted run."""
    long_run = "total_step = 300\nckpt_step = 20\nlog_step = 100\n"
    plan = COMMON + f"""
[[run]]
script = "run_fine_tune.py"
experiment = "limit"
ptrain_ver = "tiny-bert"
{long_run}
[[run]]
script = "run_fine_tune.py"
experiment = "pre"
ptrain_ver = "tiny-bert"
{long_run}
[[run]]
script = "run_fine_tune.py"
experiment = "two"
ptrain_ver = "tiny-bert"
device_id = -1
gpus = 2
"""
    flags = ("--slurm_array_parallelism", "2", "--slurm_gpus_per_run", "0")
    most, sampling = [0], [True]

    def sample():  # the jobs queued or running at once, all along
        while sampling[0]:
            most[0] = max(most[0], len(jobs_of_the_sweep(cluster)))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    exp = work / "exp"
    first = sweep_on_slurm(work, plan, *flags)
    until(lambda: all((exp / f"{name}_bert_mnli" / "model-20.pt").exists() for name in ("limit", "pre")),
          "both teachers' first checkpoints")
    first.kill()  # the sweep process dies (a login node going down); its jobs go on
    first.wait()
    submitted = json.loads((exp / "plan" / "slurm_jobs.json").read_text())
    limit, pre = job_of(cluster, "limit"), job_of(cluster, "pre")
    # A job of the high-priority partition that needs every CPU pre-empts both.
    cpus = os.cpu_count() or 1
    cluster.run("sbatch", "-p", "high", "-c", str(cpus), "-o", "/dev/null", "--wrap", "sleep 1",
                check=True)
    for job in (limit, pre):
        release(cluster, job, 1)
    second = sweep_on_slurm(work, plan, *flags)
    until(lambda: "resuming limit_bert_mnli from step" in (exp / "plan" / "logs" / "1_limit_run_fine_tune.log").read_text(),
          "the pre-empted teacher resumed")
    cluster.run("scancel", "--signal=USR2", limit, check=True)  # its time limit's warning
    release(cluster, limit, 2)
    output, _ = second.communicate(timeout=600)
    sampling[0] = False
    sampler.join()
    assert second.returncode == 0, output
    assert output.count("submitted by an earlier start, is still queued or running") == 2, output
    assert most[0] <= 2  # never more jobs than --slurm_array_parallelism
    recorded = json.loads((exp / "plan" / "slurm_jobs.json").read_text())
    assert {k: v for k, v in recorded.items() if k in submitted} == submitted and len(recorded) == 3
    assert len(list((exp / "plan" / "submitit").glob("*_submission.sh"))) == 3  # none twice

    # Each attempt ran the command again; every attempt after the first with --resume.
    def attempts(log_name):
        log = (exp / "plan" / "logs" / log_name).read_text()
        return [line for line in log.splitlines() if "$ " in line and "run_fine_tune.py" in line]
    limit_attempts, pre_attempts = attempts("1_limit_run_fine_tune.log"), attempts("2_pre_run_fine_tune.log")
    assert len(limit_attempts) == 3 and len(pre_attempts) == 2
    assert all("--resume" in line for line in limit_attempts[1:] + pre_attempts[1:])
    command = pre_attempts[0].split("run_fine_tune.py ", 1)[1].split()
    run_script("run_fine_tune.py", *command, "--exp_dir", "here", cwd=work)
    for name in ("limit", "pre"):
        assert_bitwise_equal(weights(exp / f"{name}_bert_mnli", 300), weights(work / "here" / "pre_bert_mnli", 300))

    # gpus = 2: a job with two GPUs, its script under torchrun with two processes.
    job = recorded["3 run_fine_tune.py two"]
    assert "#SBATCH --gpus-per-node=2" in (exp / "plan" / "submitit" / f"{job}_submission.sh").read_text()
    assert "-m torch.distributed.run --standalone --nproc_per_node=2" in attempts("3_two_run_fine_tune.log")[0]
    assert json.loads((exp / "two_bert_mnli" / "config.json").read_text())["world_size"] == 2
