"""`Sweep`: the scheduling loop. Runs wait in plan order until the runs they read have
ended; each starts in a free slot of the executor as a new run, with --resume when it was
killed, or not at all when it is done or trained with other settings (state.py's
`state`). A run whose dependency failed is skipped, and so are runs already submitted
behind it. A run refused because another process holds its experiment's lock (a race
with another sweep, `elsewhere`) goes back to waiting instead of failing. A run with a
[run.search] is handed to its `Search` (search.py).
"""
import time
from collections import deque
from pathlib import Path

import fine_tune.sweep.plan as plans
from fine_tune.sweep import tracking
from fine_tune.sweep.runs import Launch, Outcome, duration, last_line, say
from fine_tune.sweep.search import Search


class Sweep:
    def __init__(self, plan: plans.Plan, executor, folder: Path, poll: float):
        self.plan, self.executor, self.folder, self.poll = plan, executor, folder, poll
        self.outcomes: dict[str, Outcome] = {}
        self.active: list[Launch] = []
        self.searches = {}  # run number -> Search
        self.total = len(plan.runs)

    def log_path(self, run: plans.Run) -> Path:
        return self.folder / "logs" / f"{run.number}_{run.experiment}_{Path(run.script).stem}.log"

    # -- when can a run start? --
    def blocked_by(self, run: plans.Run) -> str | None:
        """The first run it waits for that failed (then it never starts), else None."""
        for number in run.needs:
            outcome = self.outcomes.get(number)
            if outcome is not None and outcome.status in ("failed", "skipped", "conflict"):
                return (f"{self.plan.run(number).label} "
                        f"{'did not run' if outcome.status == 'skipped' else 'failed'}")
        return None

    def ready(self, run: plans.Run) -> bool:
        for number in run.needs:
            outcome = self.outcomes.get(number)
            if outcome is None:  # not finished
                started = any(a.run.number == number for a in self.active)
                if self.executor.waits_for_dependencies or not started:
                    return False
        return True

    # -- starting --
    def launch(self, run: plans.Run, slot):
        """Start `run` in `slot` (its Launch), or say why not: 'done', 'conflict' (both
        recorded), 'failed' (the executor refused it, recorded) or 'elsewhere'."""
        # (Slurm: an evaluation submitted behind its experiment's job cannot be judged yet)
        dependency_running = any(a.run.number in run.needs for a in self.active)
        state, why = ("new", "") if dependency_running and run.kind != "train" else plans.state(run)
        flags = dict(run.flags)
        if state == "done":
            self.finish(run, "done", note=f"already done: {why}")
            return "done"
        if state == "elsewhere":
            return "elsewhere"
        if state == "conflict":
            self.finish(run, "conflict", note=why)
            return "conflict"
        if state == "resume":
            flags.pop("overwrite", None)
            flags["resume"] = True
        devices = self.executor.devices(run, slot)
        if devices:
            for key in ("device_id", "tdevice_id", "gate_device_id"):
                flags.pop(key, None)
            flags |= {k: v for k, v in devices.items() if v is not None and plans.takes(run.script, k)}
        launch = Launch(run, plans.to_argv(flags), self.log_path(run), slot=slot,
                        env=tracking.run_environment(run))
        try:
            self.executor.start(launch)
        except Exception as error:  # (e.g. sbatch refused the job: a QOS or account limit)
            self.finish(run, "failed", note=f"could not start: {str(error).strip()[:300]}")
            return "failed"
        where = self.executor.describe(slot)
        verb = "resume" if state == "resume" else "start "
        say(f"{verb} {self.position(run)} {run.experiment} ({run.script}{', ' + where if where else ''})"
            f"{': ' + why if state == 'resume' else ''}; log: {launch.log}")
        print(f"           $ {plans.Run(run.number, run.script, flags).command()}", flush=True)
        self.active.append(launch)
        return launch

    def position(self, run) -> str:
        return f"{run.number}/{self.total}"

    def finish(self, run, status, seconds=0.0, note="", log=None) -> None:
        self.outcomes[run.number] = Outcome(run, status, seconds, note, log)
        if status in ("trained", "resumed", "ran"):
            say(f"done   {self.position(run)} {run.experiment} in {duration(seconds)}")
        elif status == "done":
            say(f"skip   {self.position(run)} {run.experiment}: {note}")
        else:
            say(f"{status.upper():<6} {self.position(run)} {run.experiment}: {note}")

    def collect(self) -> None:
        """Finished processes: record them and free their slots."""
        for launch in list(self.active):
            if launch not in self.active:  # (cancelled above, behind a failed run)
                continue
            code = self.executor.poll(launch)
            search = self.searches.get(launch.run.number.split(".")[0])
            if code is None:
                if search is not None and search.prune(launch):
                    self.executor.stop(launch)
                    self.active.remove(launch)
                    self.executor.release(launch.slot)
                continue
            self.active.remove(launch)
            self.executor.release(launch.slot)
            self.executor.ended(launch)
            seconds = time.time() - launch.started
            resumed = "--resume" in launch.argv
            if code == 0:
                status = "resumed" if resumed else "trained" if launch.run.kind == "train" else "ran"
                self.finish(launch.run, status, seconds, log=launch.log)
            elif self.elsewhere(launch):
                self.outcomes.pop(launch.run.number, None)
                self.waiting.append(launch.run)
                continue
            else:
                self.finish(launch.run, "failed", seconds, note=f"exit {code}: {last_line(launch.log) or launch.error}",
                            log=launch.log)
                self.cancel_dependants(launch.run)
            if search is not None:
                search.told(launch, code)

    def cancel_dependants(self, failed: plans.Run, cause: plans.Run | None = None) -> None:
        """Runs already submitted behind a failed one (Slurm's afterok), directly or through
        other such runs, never start: cancel them all (Slurm would, one dependency at a time,
        and they would look failed), each named skipped."""
        for launch in list(self.active):
            if failed.number in launch.run.needs and launch in self.active:
                self.executor.stop(launch)
                self.active.remove(launch)
                self.executor.release(launch.slot)
                self.executor.ended(launch)
                self.finish(launch.run, "skipped", note=f"{(cause or failed).label} failed")
                self.cancel_dependants(launch.run, cause or failed)

    def elsewhere(self, launch: Launch) -> bool:
        """The script refused because another process trains the experiment (a race with
        another sweep): wait for it instead of failing. Only this attempt's output counts:
        the log also holds earlier attempts'."""
        return launch.trained_elsewhere()

    def alone(self, run: plans.Run) -> bool:
        """Whether every other waiting run still waits for a run to end (so the free slots
        left after this one would stay empty)."""
        return not any(other is not run and other.search is None and not self.blocked_by(other)
                       and self.ready(other) for other in self.waiting)

    # -- the loop --
    def execute(self) -> None:
        self.waiting = deque(self.plan.runs)
        while self.waiting or self.active:
            progressed = False
            for run in list(self.waiting):
                blocker = self.blocked_by(run)
                if blocker:
                    self.waiting.remove(run)
                    self.finish(run, "skipped", note=blocker)
                    continue
                if not self.ready(run):
                    continue
                if run.search is not None:
                    search = self.searches.get(run.number)
                    if search is None:
                        search = self.searches[run.number] = Search(self, run)
                    if search.step():
                        self.waiting.remove(run)
                    continue
                slot = self.executor.slots_for(run, alone=self.alone(run))
                if slot is None:
                    # No later run takes the free slots meanwhile: a run waiting for several
                    # GPUs would otherwise wait for ever behind one-GPU runs.
                    break
                started = self.launch(run, slot)
                if started == "elsewhere":
                    self.executor.release(slot)
                    continue
                if isinstance(started, str):  # nothing started
                    self.executor.release(slot)
                self.waiting.remove(run)
                progressed = True
            if not progressed:
                time.sleep(self.poll if self.active or self.waiting else 0)
            self.collect()
