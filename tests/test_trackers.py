"""--report_to mlflow,wandb with the real libraries, offline: MLflow in a local SQLite
store read back through MlflowClient, W&B in offline mode read back from its run files.
A run killed and resumed continues its tracker run with every step once; evaluations
after training join it; a sweep nests its runs under its own MLflow run and groups them
in W&B, a search's trials carrying their number and values; a tracker that cannot work
is one line before anything is written, one that fails mid-run a warning line."""
import json
import struct
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_script, seed_flags
from test_resume import TEACHER, run_hooked

pytestmark = pytest.mark.slow

EVAL = ["--eval_during_training", "dev_matched"]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds)."""
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # (creates the tables)
    return uri


@pytest.fixture
def tracked(workdir, mlflow_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", tmp_path.name)  # (one per test)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    for name in ("FINE_TUNE_SWEEP", "FINE_TUNE_MLFLOW_PARENT", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(name, raising=False)
    return workdir


def mlflow_runs(name):
    from mlflow.tracking import MlflowClient
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    return client, (client.search_runs([experiment.experiment_id]) if experiment else [])


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                               key=lambda m: m.step)]


# ---- W&B's offline run files ----------------------------------------------------------------

def wandb_records(path: Path):
    """The protobuf records of a W&B run file (a LevelDB-style log after a 7-byte header:
    32 KiB blocks of chunks, each with a checksum, a length and a kind)."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind in (1, 2):  # a whole record, or its first chunk
            pending = chunk
        else:
            pending += chunk
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_runs(folder: Path) -> dict:
    """{run id: [(config, tags, group, history rows, summary) of each attempt]} of the
    offline runs under `folder`, in order."""
    runs = {}
    for path in sorted(folder.rglob("run-*.wandb")):
        config, tags, group, rows, summary = {}, [], "", [], {}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id, tags, group = record.run.run_id, list(record.run.tags), record.run.run_group
                config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
            elif kind == "config":
                config |= {item.key: json.loads(item.value_json) for item in record.config.update}
            elif kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            elif kind == "summary":
                summary |= {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update}
        runs.setdefault(run_id, []).append((config, tags, group, rows, summary))
    return runs


# ---- tests ------------------------------------------------------------------------------------

def test_a_killed_run_continues_its_mlflow_run_and_evaluations_join_it(tracked, tmp_path):
    work = tracked
    flags = seed_flags(TEACHER) + EVAL + ["--report_to", "tensorboard,mlflow"]
    killed = run_hooked("kill_after_step", 7, "run_fine_tune.py", flags, work)
    assert killed.returncode == -9  # after step 7: steps 3 and 6 logged and sent, 5 saved
    run_script("run_fine_tune.py", *flags, "--resume", cwd=work)
    run_script("run_fine_tune_eval.py", "--experiment", "teacher_base", "--dataset", "dev_mismatched",
               "--device_id", "-1", "--report_to", "mlflow", cwd=work)
    folder = work / "exp" / "teacher_base_bert_mnli"
    log = pd.read_csv(folder / "train_log.csv")
    dev = pd.read_csv(folder / "results_dev_matched.csv")
    mismatched = pd.read_csv(folder / "results_dev_mismatched.csv")
    config = json.loads((folder / "config.json").read_text())

    # One run, every setting a parameter, the report's grouping as tags.
    client, runs = mlflow_runs(tmp_path.name)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "teacher_base_bert_mnli" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == str(config["lr"]) and run.data.params["seed"] == "42"
    assert {k: run.data.tags[k] for k in ("task", "method", "seed")} == \
        {"task": "mnli", "method": "teacher", "seed": "42"}
    assert "run_fine_tune.py" in run.data.tags["command"]
    # Every logged row once, at its step, as train_log.csv has it (the killed attempt
    # sent steps 3 and 6; the resumed one 9, 12, 14).
    for column in ("loss/ce", "lr/model", "grad_norm/model", "examples_per_s"):
        steps = [step for step, _ in history(client, run.info.run_id, column)]
        assert steps == log["step"].tolist() == [3, 6, 9, 12, 14], column
    # (the values are train_log.csv's but at step 6, which the killed attempt sent: its
    # mean over steps 4-6, where the resumed run's row averages step 6 alone)
    sent = dict(history(client, run.info.run_id, "loss/ce"))
    assert [sent[s] for s in (3, 9, 12, 14)] == \
        pytest.approx(log.set_index("step").loc[[3, 9, 12, 14], "loss/ce"].tolist(), rel=1e-6)
    # Every evaluation at its checkpoint's step, during training and after it.
    scores = history(client, run.info.run_id, "eval/dev_matched/accuracy")
    assert [s for s, _ in scores] == dev["step"].tolist()
    assert [v for _, v in scores] == pytest.approx(dev["accuracy"].tolist())
    assert [s for s, _ in history(client, run.info.run_id, "eval/dev_mismatched/macro_f1")] == \
        mismatched["step"].tolist() == [5, 10, 14]
    best = dev.loc[dev["accuracy"].idxmax()]
    assert history(client, run.info.run_id, "best/dev_matched/accuracy") == \
        [(int(best["step"]), pytest.approx(best["accuracy"]))]  # (once, though evaluated twice)
    assert len(history(client, run.info.run_id, "best/dev_mismatched/accuracy")) == 1
    # Evaluating again sends nothing twice.
    run_script("run_fine_tune_eval.py", "--experiment", "teacher_base", "--dataset", "dev_mismatched",
               "--device_id", "-1", "--report_to", "mlflow", cwd=work)
    assert [s for s, _ in history(client, run.info.run_id, "eval/dev_mismatched/macro_f1")] == [5, 10, 14]
    assert len(history(client, run.info.run_id, "best/dev_mismatched/accuracy")) == 1


def test_an_interrupted_run_continues_its_wandb_run_and_evaluations_join_it(tracked, tmp_path):
    work = tracked
    flags = seed_flags(TEACHER) + EVAL + ["--report_to", "wandb"]
    stopped = run_hooked("interrupt_after_step", 7, "run_fine_tune.py", flags, work)
    assert stopped.returncode == 130  # Ctrl-C: the W&B run finished before the exit
    run_script("run_fine_tune.py", *flags, "--resume", cwd=work)
    run_script("run_fine_tune_eval.py", "--experiment", "teacher_base", "--dataset", "dev_mismatched",
               "--device_id", "-1", "--report_to", "wandb", cwd=work)
    folder = work / "exp" / "teacher_base_bert_mnli"
    dev = pd.read_csv(folder / "results_dev_matched.csv")
    config = json.loads((folder / "config.json").read_text())
    # One run id over three attempts (interrupted, resumed, evaluation), the settings as
    # its config, every logged row and score once against global_step.
    runs = wandb_runs(tmp_path / "wandb_dir")
    assert len(runs) == 1
    attempts = next(iter(runs.values()))
    assert len(attempts) == 3
    first_config, tags, _, _, _ = attempts[0]
    assert first_config["lr"] == config["lr"] and "task:mnli" in tags and "method:teacher" in tags
    rows = [row for attempt in attempts for row in attempt[3]]
    assert [row["global_step"] for row in rows if "loss/ce" in row] == [3, 6, 9, 12, 14]
    assert [row["global_step"] for row in rows if "eval/dev_matched/accuracy" in row] == \
        dev["step"].tolist() == [5, 10, 14]
    assert [row["global_step"] for row in rows if "eval/dev_mismatched/accuracy" in row] == [5, 10, 14]
    best = dev.loc[dev["accuracy"].idxmax()]
    summary = {key: value for attempt in attempts for key, value in attempt[4].items()}
    assert summary["best/dev_matched/accuracy"] == pytest.approx(best["accuracy"])
    assert "best/dev_mismatched/accuracy" in attempts[-1][4]  # (what the evaluation added)


def test_without_tensorboard_no_event_files(tracked):
    work = tracked
    run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=5), *EVAL, "--report_to", "none",
               cwd=work)
    folder = work / "exp" / "teacher_base_bert_mnli"
    assert not (folder / "log").exists() and (folder / "train_log.csv").is_file()
    assert not (folder / "trackers.json").exists()
    assert json.loads((folder / "config.json").read_text())["report_to"] == []


def test_a_tracker_that_cannot_work_is_one_line_before_anything_is_written(tracked, monkeypatch, tmp_path):
    work = tracked
    import socket
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--report_to", "mlflow", cwd=work,
                        check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --report_to mlflow: the tracking server "
                                    f"http://127.0.0.1:{port} does not answer")
    assert len(result.stderr.strip().splitlines()) == 1 and not (work / "exp").exists()
    # W&B online without a login (no key, no netrc).
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--report_to", "wandb", cwd=work,
                        check=False)
    assert result.returncode == 2 and "error: --report_to wandb: not logged in to api.wandb.ai: run " \
        "wandb login" in result.stderr and not (work / "exp").exists()
    # A library that is not installed; an unknown tracker.
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    result = run_script("run_fine_tune_eval.py", "--experiment", "x", "--task", "mnli", "--dataset",
                        "dev_matched", "--report_to", "wandb", cwd=work, check=False)
    assert result.returncode == 2 and "the wandb package is not installed: pip install wandb" in result.stderr
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--report_to", "comet", cwd=work,
                        check=False)
    assert result.returncode == 2 and "argument --report_to: expected a comma-separated list of " \
        "tensorboard, mlflow, wandb, or none; got 'comet'" in result.stderr


def test_a_tracker_failing_mid_run_is_a_warning_and_training_goes_on(tracked, monkeypatch, tmp_path):
    work = tracked
    from fine_tune import trackers
    log, calls = trackers.Mlflow.log, [0]

    def failing(self, step, values):
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("the tracking server went away")
        log(self, step, values)
    monkeypatch.setattr(trackers.Mlflow, "log", failing)
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--report_to", "mlflow", cwd=work)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --report_to mlflow failed (the tracking server went away); the "
                        "run goes on without it (its files and TensorBoard are unaffected)"]
    folder = work / "exp" / "teacher_base_bert_mnli"
    assert [p.name for p in sorted(folder.glob("model-*.pt"))] == ["model-10.pt", "model-14.pt", "model-5.pt"]
    client, runs = mlflow_runs(tmp_path.name)
    assert [s for s, _ in history(client, runs[0].info.run_id, "loss/ce")] == [3]  # before it failed


def test_a_sweep_nests_its_runs_in_mlflow_groups_them_in_wandb_and_tags_trials(tracked, monkeypatch,
                                                                                tmp_path):
    from test_sweep import DEFAULTS, run_sweep, write_plan
    work = tracked
    plan = DEFAULTS.replace("[defaults]", '[defaults]\nreport_to = "mlflow,wandb"') + """
[[run]]
script = "run_lad_distil.py"
experiment = "tune"
[run.search]
trials = 2
pruner = "none"
lr = "log:1e-4:1e-3"
"""
    run_sweep(work, monkeypatch, write_plan(work, plan), "--cpus", "2")
    client, runs = mlflow_runs(tmp_path.name)
    by_name = {run.info.run_name: run for run in runs}
    assert sorted(by_name) == ["sweep plan", "teacher_bert_mnli", "tune_t0_bert_mnli", "tune_t1_bert_mnli"]
    parent = by_name.pop("sweep plan")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep"] == "plan"
    assert {"report.md", "runs.csv"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    for name, run in by_name.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, name
        assert run.data.tags["sweep"] == "plan", name
    for k in (0, 1):
        trial = by_name[f"tune_t{k}_bert_mnli"]
        assert trial.data.tags["trial"] == str(k) and trial.data.tags["method"] == "LAD"
        assert float(trial.data.tags["search/lr"]) == float(trial.data.params["lr"])
        assert trial.data.tags["teacher"] == "teacher:6"
    assert "trial" not in by_name["teacher_bert_mnli"].data.tags
    # W&B: one group per sweep, the trials' number and values as tags.
    wandb = {attempts[0][0]["experiment"]: attempts[0] for attempts in wandb_runs(tmp_path / "wandb_dir").values()}
    assert sorted(wandb) == ["teacher", "tune_t0", "tune_t1"]
    assert {group for _, _, group, _, _ in wandb.values()} == {"plan"}
    assert "trial:1" in wandb["tune_t1"][1] and any(tag.startswith("search/lr:") for tag in wandb["tune_t1"][1])
    # The sweep's environment is its own: nothing of it is left in this process.
    import os
    assert "FINE_TUNE_SWEEP" not in os.environ and "FINE_TUNE_MLFLOW_PARENT" not in os.environ


def test_under_torchrun_rank_0_alone_reports(tracked, tmp_path):
    from forked import torchrun_forked
    work = tracked
    torchrun_forked("run_fine_tune.py", *seed_flags(TEACHER, total_step=6, ckpt_step=3), *EVAL,
                    "--report_to", "mlflow", cwd=work)
    client, runs = mlflow_runs(tmp_path.name)
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    log = pd.read_csv(work / "exp" / "teacher_base_bert_mnli" / "train_log.csv")
    assert [s for s, _ in history(client, runs[0].info.run_id, "loss/ce")] == log["step"].tolist() == [3, 6]
    assert [s for s, _ in history(client, runs[0].info.run_id, "eval/dev_matched/accuracy")] == [3, 6]


def test_a_new_run_into_a_folder_left_without_checkpoints_starts_new_tracker_runs(tracked, tmp_path):
    """Killed before its first checkpoint, a run may start again without --resume (with
    other settings, even): it is a new run for the trackers too, with every step."""
    work = tracked
    flags = seed_flags(TEACHER) + ["--report_to", "mlflow"]
    assert run_hooked("kill_after_step", 4, "run_fine_tune.py", flags, work).returncode == -9
    assert (work / "exp" / "teacher_base_bert_mnli" / "trackers.json").is_file()
    run_script("run_fine_tune.py", *seed_flags(TEACHER, lr="5e-4"), "--report_to", "mlflow", cwd=work)
    client, runs = mlflow_runs(tmp_path.name)
    assert len(runs) == 2
    newest = max(runs, key=lambda run: run.info.start_time)
    assert newest.data.params["lr"] == "0.0005" and newest.info.status == "FINISHED"
    assert [s for s, _ in history(client, newest.info.run_id, "loss/ce")] == [3, 6, 9, 12, 14]


def test_a_failing_mlflow_server_is_given_up_at_once_and_unsent_steps_stay_unsent(tracked, monkeypatch):
    """A server that answers, then fails (503): one warning, no minutes of retries, and
    trackers.json records only what arrived."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    calls = {"log-batch": 0}

    class Server(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.startswith("/health"):
                return self.reply(200, {})
            if "experiments/get-by-name" in self.path:
                return self.reply(200, {"experiment": {"experiment_id": "1", "name": "x",
                                                       "lifecycle_stage": "active"}})
            return self.reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "runs/create" in self.path:
                return self.reply(200, {"run": {"info": {
                    "run_id": "run1", "run_uuid": "run1", "experiment_id": "1", "status": "RUNNING",
                    "start_time": 0, "lifecycle_stage": "active", "run_name": "x"}, "data": {}}})
            if "log-batch" in self.path:
                calls["log-batch"] += 1  # the parameters, step 3's row, then failures
                if calls["log-batch"] > 2:
                    return self.reply(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down"})
            return self.reply(200, {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_address[1]}")
    started = time.time()
    try:
        result = run_script("run_fine_tune.py", *seed_flags(TEACHER), "--report_to", "mlflow", cwd=tracked)
    finally:
        server.shutdown()
    assert time.time() - started < 60  # (MLflow's own retries would take about 4 minutes)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --report_to mlflow failed (")
    state = json.loads((tracked / "exp" / "teacher_base_bert_mnli" / "trackers.json").read_text())
    assert state["mlflow"]["run_id"] == "run1" and state["mlflow"]["train_step"] == 3  # not 6


def test_an_evaluation_while_training_reports_leaves_the_run_to_the_training(tracked, tmp_path):
    """run_fine_tune_eval.py may run while training goes on: its report neither ends the
    training's MLflow run nor loses what the training recorded as sent, nor the reverse."""
    from fine_tune.experiment import Experiment
    from fine_tune.glue import get_task
    from fine_tune.trackers import Trackers
    experiment = Experiment(tracked / "exp", "live", "bert", "mnli")
    experiment.path.mkdir(parents=True)
    (experiment.path / "config.json").write_text(json.dumps({"task": "mnli", "seed": 1, "method": "teacher",
                                                             "lr": 0.001}))
    training = Trackers(experiment, ("mlflow",), "train", fresh=True)
    training.log_training(3, {"loss/ce": 1.0})
    evaluation = Trackers(experiment, ("mlflow",), "eval")
    evaluation.log_evaluation(get_task("mnli"), "dev_mismatched",
                              [{"step": 3, "amp": "fp32", "accuracy": 0.5, "macro_f1": 0.4}])
    evaluation.finish()
    client, runs = mlflow_runs(tmp_path.name)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # the training's, still going
    training.log_training(6, {"loss/ce": 0.9})
    state = json.loads((experiment.path / "trackers.json").read_text())["mlflow"]
    assert state["train_step"] == 6 and state["evaluated"] == {"dev_mismatched": [3]}
    training.finish()
    assert client.get_run(runs[0].info.run_id).info.status == "FINISHED"
