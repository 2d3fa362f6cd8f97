"""Experiment trackers (`--report_to`): TensorBoard (the default), MLflow and Weights &
Biases, following Hugging Face's `--report_to` and the trackers' own environment
variables (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; WANDB_PROJECT, WANDB_MODE,
WANDB_RUN_GROUP, WANDB_DIR, ...).

TensorBoard is written by the training log and the results store as before; this module
is the other two. An experiment has one tracker run per tracker, its id kept in the
experiment folder's trackers.json: a resumed run, and evaluations after training,
continue that run. What a tracker gets:

- at creation: every setting of config.json as parameters (the command line as a tag),
  and tags task, method, teacher, seed, and, under a sweep, sweep and trial (the sweep
  sets FINE_TUNE_SWEEP, FINE_TUNE_TRIAL and FINE_TUNE_TRIAL_PARAMS for its runs; MLflow
  runs are nested under the sweep's parent run, FINE_TUNE_MLFLOW_PARENT; W&B runs share
  the group WANDB_RUN_GROUP, the sweep's name unless set);
- every --log_step row of train_log.csv at its step (losses, learning rates, gradient
  norms, examples/s, the gates' z and spread), from the logging interval, never per step;
- every evaluation score as eval/<split>/<metric> (eval/<split>/<metric>_bf16 for bf16
  rows) at its checkpoint's step;
- after training and after each evaluation, the best checkpoint's scores as best/...
  (MLflow: metrics at the best step; W&B: the run summary).

A step is sent once: trackers.json records, per tracker, the last training step and the
evaluated (split, precision, step) sent, so a resumed run skips the rows its killed
attempt sent (the value at a step is then that attempt's: the same on the CPU, except a
log interval that spans the kill, which the attempt averaged over more steps) and
evaluating a checkpoint again sends nothing twice. MLflow's store has a value once it is
sent; W&B writes through its own service process, so what a run sent shortly before it
was killed with SIGKILL may never be written (offline) or uploaded; Ctrl-C, or an end by
an error, finishes the W&B run first.

Never in the way: a missing library, an unreachable MLflow server or W&B without a login
is one line before training starts (`check`); a tracker that fails later is one warning
line, and the run goes on without it. Under torchrun only rank 0 reports.
"""
import importlib.util
import json
import math
import os
import time
from pathlib import Path

from fine_tune.errors import UserError
from fine_tune.io import first_line

TRACKERS = ("tensorboard", "mlflow", "wandb")
STATE = "trackers.json"
MLFLOW_EXPERIMENT = "fine_tune"  # MLflow experiment and W&B project unless the environment names one


def report_to(text: str) -> tuple:
    """--report_to: a comma-separated list of TRACKERS, or none."""
    import argparse
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in TRACKERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(TRACKERS)}, or none; got {text!r}")
    return tuple(dict.fromkeys(names))


def tensorboard(args) -> bool:
    return "tensorboard" in getattr(args, "report_to", ("tensorboard",))


def check(names) -> None:
    """Before anything is trained or written: every external tracker of `names` can work."""
    for name in names:
        if name in EXTERNAL:
            EXTERNAL[name].check()


# ---- MLflow ------------------------------------------------------------------------------

class Mlflow:
    name = "mlflow"

    @staticmethod
    def check() -> None:
        try:
            import mlflow
        except ImportError:
            raise UserError("--report_to mlflow: the mlflow package is not installed: pip install "
                            "mlflow-skinny sqlalchemy alembic (or mlflow), or leave mlflow out of "
                            "--report_to") from None
        uri = mlflow.get_tracking_uri()
        if uri.startswith("sqlite:") or uri.startswith(("postgresql", "mysql")):
            if not all(importlib.util.find_spec(name) for name in ("sqlalchemy", "alembic")):
                raise UserError(f"--report_to mlflow: the tracking store {uri} needs sqlalchemy and "
                                "alembic: pip install sqlalchemy alembic")
        if uri.startswith(("http://", "https://")):
            import urllib.request
            try:
                urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
            except Exception as error:  # (URLError, timeouts, HTTP errors)
                raise UserError(f"--report_to mlflow: the tracking server {uri} does not answer "
                                f"({first_line(error)}): start it, or set MLFLOW_TRACKING_URI to one "
                                "that answers (or to a local store, e.g. sqlite:///mlflow.db)") from None

    def __init__(self, experiment, config: dict, tags: dict, state: dict, kind: str):
        quiet_mlflow()
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient()
        self.run_id, self.kind, self.created = state.get("run_id"), kind, False
        if self.run_id is not None:
            try:
                self.client.get_run(self.run_id)
                if kind == "train":  # (an evaluation leaves the status to the training)
                    self.client.update_run(self.run_id, status="RUNNING")
                return
            except Exception:  # (the store was reset, or another store: a new run)
                self.run_id = None
        experiment_id = mlflow_experiment_id(self.client)
        parent = os.environ.get("FINE_TUNE_MLFLOW_PARENT")
        run_tags = tags | ({"mlflow.parentRunId": parent} if parent else {})
        run = self.client.create_run(experiment_id, run_name=experiment.name, tags=run_tags)
        self.run_id, self.created = run.info.run_id, True
        from mlflow.entities import Param
        params = [Param(key, str(value)[:6000]) for key, value in sorted(config.items())
                  if key != "command"]
        for start in range(0, len(params), 100):  # (MLflow's batch limit)
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def state(self) -> dict:
        return {"run_id": self.run_id}

    def log(self, step: int, values: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def summary(self, step: int, values: dict) -> None:
        self.log(step, values)

    def finish(self, failed: bool) -> None:
        # An evaluation of an experiment whose training made the run leaves its status to
        # the training (which may still be running); one that made the run ends it.
        if self.kind == "train" or self.created:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def mlflow_experiment_id(client) -> str:
    """The MLflow experiment runs go to: MLFLOW_EXPERIMENT_NAME, else fine_tune (made if new)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", MLFLOW_EXPERIMENT)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def quiet_mlflow() -> None:
    """MLflow as a tracker that is never in the way: a server that fails is given up after
    one try of at most 10 s per call, not retried for minutes (unless the user set
    MLflow's own variables), and MLflow's info lines (creating a store's tables) are not
    printed."""
    import logging
    for variable, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(variable, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)


# ---- Weights & Biases ----------------------------------------------------------------------

class Wandb:
    name = "wandb"

    @staticmethod
    def check() -> None:
        if importlib.util.find_spec("wandb") is None:
            raise UserError("--report_to wandb: the wandb package is not installed: pip install "
                            "wandb, or leave wandb out of --report_to")
        mode = os.environ.get("WANDB_MODE", "online")
        if mode in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
            return
        import netrc
        import urllib.parse
        host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        try:
            path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
            logged_in = netrc.netrc(path).authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        if not logged_in:
            raise UserError(f"--report_to wandb: not logged in to {host}: run wandb login (or set "
                            "WANDB_API_KEY), or WANDB_MODE=offline to keep the runs here and "
                            "wandb sync them later")

    def __init__(self, experiment, config: dict, tags: dict, state: dict, kind: str):
        import wandb
        run_id = state.get("run_id")  # (None: W&B makes one)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", MLFLOW_EXPERIMENT), name=experiment.name,
            id=run_id, resume="allow", config=config, job_type=kind, reinit="create_new",
            tags=[f"{key}:{value}" for key, value in tags.items() if key != "command"][:64],
            group=os.environ.get("WANDB_RUN_GROUP") or tags.get("sweep"))
        self.run_id = self.run.id
        # Every value against the run's own step column: evaluations of early checkpoints
        # come after later training steps, which W&B's step would drop.
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def state(self) -> dict:
        return {"run_id": self.run_id}

    def log(self, step: int, values: dict) -> None:
        self.run.log({"global_step": int(step)} | {k: float(v) for k, v in values.items()})

    def summary(self, step: int, values: dict) -> None:
        self.run.summary.update(values | {"best/step": int(step)})

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


EXTERNAL = {"mlflow": Mlflow, "wandb": Wandb}


# ---- one experiment's trackers ---------------------------------------------------------------

def run_tags(config: dict) -> dict:
    """Tags that let a tracker group runs as the report does."""
    from fine_tune.experiment_rows import method_of
    tags = {"task": config.get("task"), "method": method_of(config), "seed": config.get("seed")}
    if config.get("teacher_exp"):
        tags["teacher"] = f"{config['teacher_exp']}:{config.get('tckpt')}"
    for key, variable in (("sweep", "FINE_TUNE_SWEEP"), ("trial", "FINE_TUNE_TRIAL")):
        if os.environ.get(variable):
            tags[key] = os.environ[variable]
    try:
        for key, value in json.loads(os.environ.get("FINE_TUNE_TRIAL_PARAMS") or "{}").items():
            tags[f"search/{key}"] = value
    except ValueError:
        pass
    if config.get("command"):
        tags["command"] = str(config["command"])[:5000]
    return {key: str(value) for key, value in tags.items() if value is not None}


class Trackers:
    """The external trackers of --report_to for one experiment (empty: nothing to do)."""

    def __init__(self, experiment, names, kind: str, fresh: bool = False):
        """`fresh`: a training run that is not a --resume starts new tracker runs (a
        trackers.json left by an earlier start that saved no checkpoint is not continued)."""
        self.experiment, self.active, self.kind, self.saved = experiment, {}, kind, {}
        names = [name for name in names if name in EXTERNAL]
        if not names:
            return
        self.saved = {} if fresh else self._read_state()
        config = json.loads((experiment.path / "config.json").read_text())
        tags = run_tags(config)
        for name in names:
            try:
                self.active[name] = EXTERNAL[name](experiment, config, tags,
                                                   self.saved.get(name, {}), kind)
            except Exception as error:  # (check passed: the server went away since)
                self._warn(name, error)
        self._write_state()

    def __bool__(self) -> bool:
        return bool(self.active)

    # ---- what is sent ----
    def log_training(self, step: int, row: dict) -> None:
        if not self.active:
            return
        values = _finite(row)
        for name in self._each_new(lambda sent: step > sent.get("train_step", 0)):
            if self._call(name, "log", step, values):  # (a failed send is not recorded)
                self.saved[name]["train_step"] = step
        self._write_state()

    def log_evaluation(self, task, split: str, rows: list) -> None:
        """Rows of the results store ({step, amp, metric: value}) not sent yet."""
        if not self.active:
            return
        from fine_tune.glue import get_task
        for row in rows:
            suffix = "_bf16" if row.get("amp") == "bf16" else ""
            key, step = f"{split}{suffix}", int(row["step"])
            values = _finite({f"eval/{split}/{metric}{suffix}": row[metric]
                              for metric in get_task(task.trained_as).metrics if metric in row})
            for name in self._each_new(lambda sent: step not in sent.get("evaluated", {}).get(key, [])):
                if self._call(name, "log", step, values):
                    self.saved[name].setdefault("evaluated", {}).setdefault(key, []).append(step)
        self._write_state()

    def log_best(self, task) -> None:
        """The best checkpoint's scores (fine_tune.results' rule) on every scored split."""
        if not self.active:
            return
        from fine_tune.glue import get_task
        from fine_tune.results import best_checkpoint, preferred_rows, read_results
        best = best_checkpoint(self.experiment.path, task)
        if best is None:
            return
        values = {}
        for split in task.labelled_splits():
            table = read_results(self.experiment.path, split)
            if table is None:
                continue
            rows = preferred_rows(table)
            rows = rows.loc[rows["step"] == best.step]
            for metric in get_task(task.trained_as).metrics:
                if len(rows) and metric in rows.columns:
                    values[f"best/{split}/{metric}"] = rows[metric].iloc[0]
        values = _finite(values)
        for name in list(self.active):
            # Each value once: only those new or changed since the last time (another
            # best step sends them all).
            sent = self.saved.setdefault(name, {}).get("best") or {}
            known = sent.get("values", {}) if sent.get("step") == best.step else {}
            new = {key: value for key, value in values.items() if known.get(key) != value}
            if new and self._call(name, "summary", best.step, new):
                self.saved[name]["best"] = {"step": best.step, "values": known | new}
        self._write_state()

    def finish(self, failed: bool = False) -> None:
        self._each("finish", failed)
        self.active = {}

    # ---- plumbing ----
    def _each_new(self, unsent) -> list:
        """The active trackers for which `unsent(what was sent to it)` holds."""
        return [name for name in list(self.active)
                if unsent(self.saved.setdefault(name, {}))]

    def _call(self, name: str, method: str, *args) -> bool:
        """Whether it worked (a tracker that fails is dropped, with a warning)."""
        tracker = self.active.get(name)
        if tracker is None:
            return False
        try:
            getattr(tracker, method)(*args)
            return True
        except Exception as error:  # a tracker never stops training
            self._warn(name, error)
            return False

    def _each(self, method: str, *args) -> None:
        for name in list(self.active):
            self._call(name, method, *args)

    def _warn(self, name: str, error: Exception) -> None:
        import sys
        tracker = self.active.pop(name, None)
        try:  # (end its run as failed, where the tracker still answers)
            if tracker is not None:
                tracker.finish(True)
        except Exception:
            pass
        print(f"warning: --report_to {name} failed ({first_line(error)}); the run goes on without "
              f"it (its files and TensorBoard are unaffected)", file=sys.stderr, flush=True)

    def _read_state(self) -> dict:
        try:
            saved = json.loads((self.experiment.path / STATE).read_text())
            return saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        """trackers.json: per tracker, its run id, the last training step, the evaluated
        (split, step) and the best scores sent to it. Merged with the file under the
        results store's lock: an evaluation may report while the training does."""
        from fine_tune.io import atomic_write_json
        from fine_tune.results import store_lock
        for name, tracker in self.active.items():
            self.saved.setdefault(name, {}).update(tracker.state())
        try:
            with store_lock(self.experiment.path):
                self.saved = _merged(self._read_state(), self.saved)
                atomic_write_json(self.saved, self.experiment.path / STATE)
        except OSError as error:
            raise UserError(f"cannot write {self.experiment.path / STATE} ({error.strerror or error}): "
                            f"free disk space or fix the permissions of {self.experiment.path}") from None


def _merged(on_disk: dict, mine: dict) -> dict:
    """Two views of trackers.json as one: per tracker, my run id (else the file's), the
    later training step, every evaluated step of either, my best (else the file's)."""
    merged = dict(on_disk)
    for name, sent in mine.items():
        theirs = on_disk.get(name, {}) if isinstance(on_disk.get(name), dict) else {}
        if theirs.get("run_id") not in (None, sent.get("run_id")):
            merged[name] = sent  # (another tracker run: mine replaces it)
            continue
        entry = theirs | sent
        entry["train_step"] = max(theirs.get("train_step", 0), sent.get("train_step", 0))
        evaluated = {key: list(steps) for key, steps in theirs.get("evaluated", {}).items()}
        for key, steps in sent.get("evaluated", {}).items():
            evaluated[key] = sorted(set(evaluated.get(key, [])) | set(steps))
        entry["evaluated"] = evaluated
        merged[name] = entry
    return merged


def _finite(values: dict) -> dict:
    """The values a tracker can store (a NaN correlation of constant predictions is left out)."""
    out = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out
