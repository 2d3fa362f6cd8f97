"""A sweep's runs in experiment trackers (--report_to in the plan): grouped by sweep.

`tracking` (a context manager around the sweep) checks the plan's trackers before any run
starts and sets, for every run the sweep starts (local processes and Slurm jobs inherit
the sweep's environment): FINE_TUNE_SWEEP (the sweep's name, a tag of each run);
WANDB_RUN_GROUP (W&B's group, the sweep's name unless set); and, when a run reports to
MLflow, FINE_TUNE_MLFLOW_PARENT: the sweep's own MLflow run (kept in the sweep folder's
trackers.json, so a sweep started again continues it), under which every run is nested.
The environment is restored when the sweep ends. `run_environment` adds a search trial's
number and values (FINE_TUNE_TRIAL, FINE_TUNE_TRIAL_PARAMS) to its launch.
"""
import contextlib
import json
import os
from pathlib import Path

from fine_tune import trackers


def plan_trackers(plan) -> set:
    return {name for run in plan.runs for name in (run.settings.get("report_to") or ())}


@contextlib.contextmanager
def tracking(plan, name: str, folder: Path):
    names = plan_trackers(plan)
    trackers.check(names)  # (before any run starts)
    saved = dict(os.environ)
    parent, outcome = None, {"failed": True}  # (the sweep sets failed = False when all ran)
    try:
        if names - {"tensorboard"}:
            os.environ["FINE_TUNE_SWEEP"] = name
        if "wandb" in names:
            os.environ.setdefault("WANDB_RUN_GROUP", name)
        if "mlflow" in names:
            parent = SweepRun(folder, name, plan)
            if parent.run_id:
                os.environ["FINE_TUNE_MLFLOW_PARENT"] = parent.run_id
        yield outcome
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if parent is not None:
            parent.finish(outcome["failed"])


def run_environment(run) -> dict:
    """Variables of one run's process: a search trial's number and values."""
    if run.trial is None:
        return {}
    return {"FINE_TUNE_TRIAL": str(run.trial["number"]),
            "FINE_TUNE_TRIAL_PARAMS": json.dumps(run.trial["params"], default=str)}


class SweepRun:
    """The sweep's MLflow run, parent of its runs' (a failure is one warning line: the
    runs are then reported without a parent)."""

    def __init__(self, folder: Path, name: str, plan):
        self.folder, self.run_id, self.client = folder, None, None
        path = folder / trackers.STATE
        try:
            trackers.quiet_mlflow()
            from mlflow.tracking import MlflowClient
            self.client = MlflowClient()
            try:
                self.run_id = json.loads(path.read_text()).get("mlflow", {}).get("run_id")
            except (OSError, ValueError, AttributeError):
                self.run_id = None
            if self.run_id is not None:
                try:
                    self.client.update_run(self.run_id, status="RUNNING")
                except Exception:  # (another store now: a new parent)
                    self.run_id = None
            if self.run_id is None:
                self.run_id = self.client.create_run(
                    trackers.mlflow_experiment_id(self.client), run_name=f"sweep {name}",
                    tags={"sweep": name, "plan": str(plan.path), "kind": "sweep"}).info.run_id
            from fine_tune.io import atomic_write_json
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json({"mlflow": {"run_id": self.run_id}}, path)
        except Exception as error:
            self._warn(error)

    def finish(self, failed: bool) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            for report in ("report.md", "report.csv", "runs.csv"):  # (the sweep's own files)
                if (self.folder / report).is_file():
                    self.client.log_artifact(self.run_id, str(self.folder / report))
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        except Exception as error:
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        import sys

        from fine_tune.io import first_line
        self.run_id = None
        print(f"warning: --report_to mlflow: the sweep's own MLflow run failed ({first_line(error)}); "
              "its runs are reported without a parent", file=sys.stderr, flush=True)
