"""`python -m fine_tune.sweep PLAN --executor slurm` on a real Slurm cluster started by the
tests (tests/slurm_cluster.py: slurmctld, slurmd and munged of Debian's slurm-wlm, fake
GPUs, no accounting database): a plan ends with the same weights, scores and files as the
same commands run here, in CPU-only jobs; a failing teacher's dependants are cancelled and
named skipped; a training job requeued by Slurm (scontrol requeue, as a node failure or an
administrator does) continues from its checkpoint to weights bitwise equal to an
uninterrupted run, while the sweep waits for it.

Without Slurm installed (or without root) these tests are skipped, and say how to run
them; under CI=true that fails instead.
"""
import os
import shutil
import subprocess
import sys
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
