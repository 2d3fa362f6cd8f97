"""`python -m fine_tune.sweep PLAN.toml`: run a plan of experiments, resumably, and report.

The plan (fine_tune.plan) lists runs of the entry scripts; each is exactly the command it
prints. Runs start when the experiments they read have been trained (a student after its
teacher, an evaluation after its experiment); a run whose experiment is finished is
skipped, one that was killed is continued with --resume, so running a plan again after a
crash does only what is left. Runs execute as local processes (one per --cpus slot or
per --gpus device), as Slurm jobs through submitit, or as trials of an Optuna search. At
the end: a table of what ran, was skipped or failed, and the report of the sweep's
experiments in <exp_dir>/<sweep>/report.md.
"""
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from fine_tune import plan as plans
from fine_tune.cli import new_parser, positive_float, positive_int
from fine_tune.errors import Interrupted, UserError, run_cli
from fine_tune.settings import Settings

ROOT = Path(__file__).resolve().parent.parent  # where the entry scripts are


def now() -> str:
    return time.strftime("%H:%M:%S")


def say(text: str) -> None:
    print(f"[{now()}] {text}", flush=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def script_path(script: str) -> str:
    """The entry script as the user would type it: relative when run from the project root
    (config.json records the command)."""
    return script if Path.cwd().resolve() == ROOT else str(ROOT / script)


def _die_with_parent() -> None:
    """A local run ends when the sweep process dies, even by kill -9 (Linux): a sweep
    started again then resumes it instead of waiting for an orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---- executors: start a command, poll it, stop it ----------------------------------------

@dataclass
class Launch:
    run: plans.Run
    argv: list             # the flags it runs with (the plan's, plus --resume / device ids)
    log: Path
    handle: object = None
    slot: tuple = ()
    error: str = ""        # why the executor says it failed, when the log cannot
    started: float = field(default_factory=time.time)


class LocalExecutor:
    """One process per slot: --cpus N slots on the CPU, or one slot per GPU of --gpus."""
    waits_for_dependencies = True  # (Slurm can hold a job until its teacher's has succeeded)

    def __init__(self, gpus: list[int] | None, cpus: int | None):
        self.gpus, self.cpus = gpus, cpus
        self.free = deque(gpus if gpus else range(cpus or 1))

    def slots_for(self, run: plans.Run):
        wanted = run.gpus if self.gpus else 1
        if self.gpus and wanted > len(self.gpus):
            raise UserError(f"{run.label} asks for {wanted} GPUs; --gpus gives {len(self.gpus)}")
        if len(self.free) < wanted:
            return None
        return tuple(self.free.popleft() for _ in range(wanted))

    def release(self, slot: tuple) -> None:
        self.free.extend(slot)

    def describe(self, slot: tuple) -> str:
        return (f"GPU{'s' * (len(slot) > 1)} {','.join(map(str, slot))}" if self.gpus
                else f"CPU slot {slot[0] + 1}" if self.cpus else "")

    def devices(self, run: plans.Run, slot: tuple) -> dict:
        """The device flags the slot gives the run (the teacher and the gates follow
        --device_id when left out)."""
        if not self.gpus and not self.cpus:
            return {}
        return {"device_id": -1 if not self.gpus else None if len(slot) > 1 else slot[0]}

    def environment(self, slot: tuple) -> dict:
        env = dict(os.environ)
        if self.gpus and len(slot) > 1:  # (indices count in the user's own visible list)
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            names = visible.split(",") if visible else None
            env["CUDA_VISIBLE_DEVICES"] = ",".join(names[i] if names and i < len(names) else str(i)
                                                   for i in slot)
        if self.cpus and "OMP_NUM_THREADS" not in os.environ:  # N runs share the cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.cpus))
        return env

    def start(self, launch: Launch) -> None:
        command = command_line(launch.run, launch.argv, len(launch.slot))
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log, "a", encoding="utf-8") as log:
            log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(command)}\n")
            log.flush()
            launch.handle = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL,
                                             env=self.environment(launch.slot),
                                             preexec_fn=_die_with_parent)

    def poll(self, launch: Launch):
        return launch.handle.poll()

    def ended(self, launch: Launch) -> None:
        pass

    def stop(self, launch: Launch) -> None:
        if launch.handle.poll() is None:
            launch.handle.terminate()
            try:
                launch.handle.wait(30)
            except subprocess.TimeoutExpired:
                launch.handle.kill()
                launch.handle.wait()


def command_line(run: plans.Run, argv: list, gpus: int) -> list[str]:
    """The process a run is: the script, under torchrun when it has several GPUs."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus}", script_path(run.script), *argv]
    return [sys.executable, script_path(run.script), *argv]


class Command:
    """What a submitit job runs: the command, its output appended to the run's log. On a
    pre-emption or a time-out Slurm signals the job; submitit then asks `checkpoint` for
    what to requeue: the same command with --resume."""

    def __init__(self, run: plans.Run, argv: list, log: Path, gpus: int, cwd: str):
        self.run, self.argv, self.log, self.gpus, self.cwd = run, argv, log, gpus, cwd
        self.process = None

    def __call__(self) -> int:
        os.chdir(self.cwd)
        command = command_line(self.run, self.argv, self.gpus)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(command)}\n")
            log.flush()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
            code = self.process.wait()
        if code:
            raise RuntimeError(f"{self.run.label} exited with status {code}; see {self.log}")
        return code

    def checkpoint(self, *args, **kwargs):
        import submitit
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        argv = self.argv if "--resume" in self.argv or self.run.kind != "train" else \
            [a for a in self.argv if a != "--overwrite"] + ["--resume"]
        return submitit.helpers.DelayedSubmission(Command(self.run, argv, self.log, self.gpus,
                                                          self.cwd))


class SubmititExecutor:
    """One submitit job per run: Slurm (`--executor slurm`), or submitit's local executor
    (`--executor submitit_local`, which runs the same jobs as processes on this machine)."""

    def __init__(self, folder: Path, cluster: str, args):
        # The job unpickles a fine_tune.sweep.Command: it must import this project wherever
        # it starts (the environment travels with the job, on Slurm as locally).
        paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.cluster = cluster
        self.waits_for_dependencies = cluster != "slurm"  # Slurm holds a job (afterok)
        # (a run longer than --slurm_time is requeued at each limit, as often as it takes)
        self.folder = folder / "submitit"
        try:
            self.new_executor()
        except RuntimeError as error:  # (submitit finds no srun)
            raise UserError(f"--executor {cluster}: no Slurm on this machine ({error}); run the "
                            "sweep on the cluster's login node, or try the plan here with "
                            "--executor submitit_local") from None
        self.parallel = args.slurm_array_parallelism
        self.running = 0
        self.gpus_per_run = args.slurm_gpus_per_run
        self.common = {"timeout_min": args.slurm_time}
        if cluster == "slurm":
            # A job whose teacher's job failed is cancelled by Slurm rather than pending forever.
            self.common |= {"slurm_partition": args.slurm_partition,
                            "slurm_additional_parameters": {"kill-on-invalid-dep": "yes"}
                            | dict(args.slurm_option or [])}
        self.jobs = {}  # run number -> its job, while it runs (for afterok)

    def new_executor(self):
        """One per job: submitit keeps parameters from one submission to the next (a
        student's dependency would stay on every later job)."""
        import submitit
        return submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                     slurm_max_num_timeout=1000)

    def slots_for(self, run):
        if self.parallel and self.running >= self.parallel:
            return None
        self.running += 1
        return ("job",)

    def release(self, slot):
        self.running -= 1

    def ended(self, launch: Launch) -> None:
        self.jobs.pop(launch.run.number, None)

    def describe(self, slot):
        return ""

    def devices(self, run, slot):
        return {}

    def start(self, launch: Launch) -> None:
        # GPUs of the job, and processes of its torchrun when more than one
        gpus = max(launch.run.gpus, self.gpus_per_run) if self.cluster == "slurm" else 1
        parameters = {k: v for k, v in self.common.items() if v is not None}
        parameters["name"] = f"sweep-{launch.run.experiment}"
        if self.cluster == "slurm":
            after = [self.jobs[n].job_id for n in launch.run.needs if n in self.jobs]
            parameters |= {"gpus_per_node": gpus, "tasks_per_node": 1}
            if after:
                parameters["slurm_dependency"] = "afterok:" + ":".join(after)
        executor = self.new_executor()
        executor.update_parameters(**parameters)
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        launch.handle = executor.submit(Command(launch.run, launch.argv, launch.log, gpus,
                                                     os.getcwd()))
        self.jobs[launch.run.number] = launch.handle

    def poll(self, launch: Launch):
        job = launch.handle
        if not job.done():
            return None
        try:
            job.result()
            return 0
        except Exception as error:  # the command's own error is in the run's log
            launch.error = str(error).strip().splitlines()[-1][:300] if str(error).strip() else \
                type(error).__name__
            return 1

    def stop(self, launch: Launch) -> None:
        launch.handle.cancel(check=False)


# ---- the sweep ----------------------------------------------------------------------------

@dataclass
class Outcome:
    run: plans.Run
    status: str          # trained, resumed, done, failed, skipped, ...
    seconds: float = 0.0
    note: str = ""
    log: Path | None = None


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
        launch = Launch(run, plans.to_argv(flags), self.log_path(run), slot=slot)
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

    def cancel_dependants(self, failed: plans.Run) -> None:
        """Runs already submitted behind a failed one (Slurm's afterok) never start: cancel them."""
        for launch in list(self.active):
            if failed.number in launch.run.needs:
                self.executor.stop(launch)
                self.active.remove(launch)
                self.executor.release(launch.slot)
                self.executor.ended(launch)
                self.finish(launch.run, "skipped", note=f"{failed.label} failed")

    def elsewhere(self, launch: Launch) -> bool:
        """The script refused because another process trains the experiment (a race with
        another sweep): wait for it instead of failing."""
        return any("is being trained by" in line for line in tail(launch.log, 20))

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
                slot = self.executor.slots_for(run)
                if slot is None:
                    continue
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

    def table(self):
        import pandas as pd
        rows = []
        for run in self.plan.runs:
            outcomes = [o for n, o in self.outcomes.items() if n == run.number or n.startswith(f"{run.number}.")]
            for outcome in outcomes or [Outcome(run, "not run")]:
                rows.append({"run": outcome.run.number, "script": outcome.run.script,
                             "task": outcome.run.settings.get("task", ""),
                             "experiment": outcome.run.experiment, "status": outcome.status,
                             "time": duration(outcome.seconds) if outcome.seconds else "",
                             "note": outcome.note[:100]})
        return pd.DataFrame(rows)


class Search:
    """One [run.search]: trials asked from an Optuna study stored in the sweep folder
    (optuna.log, a journal file: a killed sweep resumes the study, finished trials are not
    repeated), each run as <experiment>_t<k> through the sweep's executor; the objective
    is the task's first metric on its dev split at the best checkpoint (the results
    store), and a trial whose scores during training fall below the median of earlier
    trials at the same step is pruned (stopped)."""

    def __init__(self, sweep: Sweep, run: plans.Run):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep, self.run = sweep, run
        self.space = plans.space(sweep.plan.path, run)
        self.trials = run.search["trials"]
        sweep.folder.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(sweep.folder / "optuna.log")))
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if run.search.get("pruner", "median") == "median" else optuna.pruners.NopPruner())
        self.study = optuna.create_study(
            study_name=f"{run.experiment}", storage=storage, direction="maximize",
            pruner=pruner, load_if_exists=True)
        # Seeded by the study's progress: a restarted search does not draw the values of
        # its first trials again.
        self.study.sampler = optuna.samplers.TPESampler(seed=len(self.study.trials))
        self.running = {}  # trial run number -> (optuna Trial, reported steps)
        # Trials a killed sweep left running: continue them (same values, --resume).
        from optuna.trial import TrialState
        self.stale = deque(t for t in self.study.get_trials(deepcopy=False)
                           if t.state == TrialState.RUNNING)
        # Trials an earlier start finished: in this sweep's table and report too.
        status = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state in status:
                earlier = plans.trial_run(run, trial.number, trial.params)
                note = (f"{trial.value:.4f} (an earlier start)" if trial.value is not None
                        else "(an earlier start)")
                sweep.outcomes[earlier.number] = Outcome(earlier, status[trial.state], note=note)
        from fine_tune.results import dev_split
        self.task = run.task()
        self.split, self.metric = dev_split(self.task), self.task.metrics[0]

    def finished(self) -> int:
        from optuna.trial import TrialState
        return sum(t.state.is_finished() for t in self.study.get_trials(deepcopy=False)
                   if t.state != TrialState.RUNNING)

    def step(self) -> bool:
        """Start trials while slots are free; True when every trial has ended."""
        import optuna
        while self.finished() + len(self.running) < self.trials or self.stale:
            slot = self.sweep.executor.slots_for(self.run)
            if slot is None:
                break
            frozen = None
            if self.stale:
                frozen = self.stale.popleft()
                trial = optuna.trial.Trial(self.study, frozen._trial_id)
                k = frozen.number
            else:
                trial = self.study.ask(self.space)
                k = trial.number
            trial_run = plans.trial_run(self.run, k, trial.params)
            self.sweep.total_trials = getattr(self.sweep, "total_trials", 0) + 1
            launch = self.sweep.launch(trial_run, slot)
            if isinstance(launch, str):  # nothing started
                self.sweep.executor.release(slot)
                if launch == "elsewhere":  # another sweep runs this trial: look again later
                    if frozen is not None:
                        self.stale.appendleft(frozen)
                    break
                # done already: its objective is in the store; failed or conflict: a failure
                self.running[trial_run.number] = (trial, set())
                self.told(Launch(trial_run, [], self.sweep.log_path(trial_run)),
                          0 if launch == "done" else 1)
                continue
            self.running[trial_run.number] = (trial, set())
        if self.finished() >= self.trials and not self.running:
            best = self.study.best_trial if any(t.value is not None for t in self.study.trials) else None
            if best is not None:
                say(f"search {self.run.number}: best of {self.trials} trials: "
                    f"{self.run.experiment}_t{best.number} {self.metric} {best.value:.4f} with "
                    + ", ".join(f"{k} = {v}" for k, v in best.params.items()))
            return True
        return False

    def scores(self, launch: Launch) -> dict:
        from fine_tune.results import preferred_rows, read_results
        try:
            table = read_results(launch.run.folder(), self.split)
        except UserError:
            return {}
        if table is None or self.metric not in table.columns:
            return {}
        table = preferred_rows(table).dropna(subset=[self.metric])
        return dict(zip(table["step"].astype(int), table[self.metric].astype(float)))

    def prune(self, launch: Launch) -> bool:
        """Report new dev scores of a running trial; True when Optuna prunes it."""
        trial, reported = self.running.get(launch.run.number, (None, None))
        if trial is None:
            return False
        for step, value in sorted(self.scores(launch).items()):
            if step not in reported:
                trial.report(value, step)
                reported.add(step)
        if reported and trial.should_prune():
            import optuna
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            del self.running[launch.run.number]
            self.sweep.finish(launch.run, "pruned", time.time() - launch.started,
                              note=f"below the median of earlier trials at step {max(reported)}",
                              log=launch.log)
            return True
        return False

    def told(self, launch: Launch, code: int) -> None:
        import optuna
        trial, _ = self.running.pop(launch.run.number, (None, None))
        if trial is None:
            return
        from fine_tune.results import best_checkpoint
        best = best_checkpoint(launch.run.folder(), self.task) if code == 0 else None
        value = None if best is None else best.scores.get(self.metric)
        if value is None or value != value:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)
            outcome = self.sweep.outcomes.get(launch.run.number)
            if outcome is not None:
                outcome.note = f"{self.metric} {value:.4f} (best at step {best.step})"


def last_line(log: Path | None) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, AttributeError):
        return ""
    return lines[-1].strip()[-300:] if lines else ""


def tail(log: Path, n: int = 5) -> list[str]:
    try:
        return [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-n:]
    except OSError:
        return []


# ---- the command ------------------------------------------------------------------------

def assignment(text: str) -> tuple[str, object]:
    """--set lr=1e-4 -> ('lr', 0.0001): the value read as TOML (a string when it is not)."""
    import argparse
    import tomllib
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().lstrip("-"), parsed


def gpu_list(text: str) -> list[int]:
    import argparse
    try:
        gpus = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU indices such as 0,1,2,3; got {text!r}") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct GPU indices such as 0,1,2,3; got {text!r}")
    return gpus


def minutes(text: str) -> int:
    """--slurm_time: minutes, or HH:MM:SS as sbatch takes it."""
    import argparse
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            while len(parts) < 3:
                parts.insert(0, 0)
            hours, mins, secs = parts
            return max(1, hours * 60 + mins + (secs > 0))
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes or HH:MM:SS, got {text!r}") from None


def build_parser():
    parser = new_parser(__doc__.split("\n\n")[0] + " See README.md, 'Sweeps', for the plan's "
                        "format.", prog="python -m fine_tune.sweep")
    parser.add_argument("plan", help="the plan, a TOML file (plans/demo.toml, plans/lad_paper_rte.toml)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print every run's command, what it waits for and what it would do "
                             "now (start, resume, skip as done), after checking every run's "
                             "flags with its script's parser; starts nothing")
    parser.add_argument("--name", default=None,
                        help="the sweep's folder, <exp_dir>/<name>/ (logs/, report.md, "
                             "optuna.log) (default: the plan file's name without .toml)")
    parser.add_argument("--set", dest="overrides", type=assignment, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="set a flag for every run that takes it, over the plan's values "
                             "(repeatable; e.g. --set exp_dir=exp2 --set amp=bf16)")
    parser.add_argument("--executor", default="local", choices=("local", "slurm", "submitit_local"),
                        help="local: processes on this machine (--cpus, --gpus); slurm: one "
                             "submitit job per run on a Slurm cluster; submitit_local: the "
                             "same jobs through submitit's local executor, on this machine (to "
                             "try a plan's Slurm path)")
    parser.add_argument("--gpus", type=gpu_list, default=None, metavar="0,1,...",
                        help="local: one run per GPU at a time, with --device_id set to it (a "
                             "run with gpus = N in the plan takes N of them, under torchrun)")
    parser.add_argument("--cpus", type=positive_int, default=None, metavar="N",
                        help="local: N runs side by side on the CPU (--device_id -1), each "
                             "with cores/N threads unless OMP_NUM_THREADS is set (default "
                             "without --gpus: one run at a time, device flags as the plan says)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="the report's baseline experiment (fine_tune.report --baseline; "
                             "default: [sweep] baseline in the plan, else none)")
    parser.add_argument("--poll", type=positive_float, default=2.0,
                        help="seconds between checks of running runs")
    slurm = parser.add_argument_group("Slurm (--executor slurm)")
    slurm.add_argument("--slurm_partition", default=None, help="partition of every job")
    slurm.add_argument("--slurm_gpus_per_run", type=positive_int, default=1,
                       help="GPUs of each job (a run with gpus = N in the plan gets N if "
                            "more); a job with several runs its script under torchrun, one "
                            "process per GPU")
    slurm.add_argument("--slurm_time", type=minutes, default=None, metavar="MIN|HH:MM:SS",
                       help="time limit of each job, required with --executor slurm; a job "
                            "that reaches it is requeued and continues with --resume, as often "
                            "as it takes (submitit_local: default 5 minutes, without requeue)")
    slurm.add_argument("--slurm_array_parallelism", type=positive_int, default=None, metavar="N",
                       help="at most N of the sweep's jobs queued or running at once")
    slurm.add_argument("--slurm_option", type=assignment, action="append", default=[],
                       metavar="KEY=VALUE",
                       help="any other #SBATCH option, passed through (repeatable; e.g. "
                            "--slurm_option account=nlp --slurm_option constraint=a100)")
    return parser


def sweep(args) -> None:
    if args.executor != "local" and (args.gpus or args.cpus):
        raise UserError("--gpus and --cpus are for --executor local; Slurm jobs get "
                        "--slurm_gpus_per_run")
    if args.gpus and args.cpus:
        raise UserError("--gpus and --cpus are two executors' slots: pass one")
    if args.executor == "slurm" and args.slurm_time is None:
        raise UserError("--executor slurm needs --slurm_time (each job's limit, e.g. 24:00:00; "
                        "a run that reaches it is requeued and resumed)")
    plan = plans.load(args.plan, dict(args.overrides))
    too_big = [run for run in plan.runs if args.gpus and run.gpus > len(args.gpus)]
    if too_big:
        raise UserError(f"{too_big[0].label} asks for gpus = {too_big[0].gpus}; --gpus gives "
                        f"{len(args.gpus)}: give more GPUs or lower its gpus")
    name = args.name or Path(args.plan).stem
    folder = plan.exp_dir / name
    print(f"plan {args.plan}: {len(plan.runs)} run{'s' * (len(plan.runs) > 1)}, sweep folder {folder}")
    if args.dry_run:
        for run in plan.runs:
            waits = f"  (after run{'s' * (len(run.needs) > 1)} {', '.join(run.needs)})" if run.needs else ""
            search = (f"  [search: {run.search['trials']} trials of "
                      f"{', '.join(k for k in run.search if k not in ('trials', 'pruner'))}]"
                      if run.search else "")
            now_state = "" if run.search else f"  -> {plans.state(run)[0]}"
            print(f"{run.number:>4}. {run.command()}{waits}{search}{now_state}")
        print("every run's flags are valid (nothing was started)")
        return
    if args.executor == "local":
        executor = LocalExecutor(args.gpus, args.cpus)
    else:
        executor = SubmititExecutor(folder, "slurm" if args.executor == "slurm" else "local", args)
    started = time.time()
    runner = Sweep(plan, executor, folder, args.poll)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    finished = False
    try:
        runner.execute()
        finished = True
    except KeyboardInterrupt:
        raise Interrupted("sweep interrupted: the same command continues it (finished runs are "
                          "skipped, stopped ones resumed)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not finished:  # (whatever stopped the sweep: no run is left unwatched)
            for launch in list(runner.active):
                executor.stop(launch)
    table = runner.table()
    print(f"\nsweep {name}: {len(plan.runs)} runs in {duration(time.time() - started)}")
    print(table.to_string(index=False))
    folder.mkdir(parents=True, exist_ok=True)
    from fine_tune.io import atomic_write_text
    atomic_write_text(table.to_csv(index=False), folder / "runs.csv")
    failed = [o for o in runner.outcomes.values() if o.status in ("failed", "conflict")]
    for outcome in failed:
        if outcome.log:
            print(f"\n{outcome.run.label} failed; the last lines of {outcome.log}:")
            print("\n".join("    " + line for line in tail(outcome.log)))
        else:
            print(f"\n{outcome.run.label} {outcome.status}: {outcome.note}")
    write_report(plan, runner, folder, args.baseline or plan.baseline)
    if failed:  # (exit 1: runs failed; 2 is for a plan refused before anything ran)
        print(f"error: {len(failed)} run{'s' * (len(failed) > 1)} failed (see above; "
              f"{folder / 'runs.csv'}): fix them and run the same command again",
              file=sys.stderr)
        sys.exit(1)


def write_report(plan: plans.Plan, runner: Sweep, folder: Path, baseline: str | None) -> None:
    """The report of the sweep's experiments (fine_tune.report), into the sweep's folder."""
    from fine_tune.report import report
    names = sorted({o.run.folder().name for o in runner.outcomes.values() if o.run.kind == "train"})
    names = [name for name in names if (plan.exp_dir / name / "config.json").is_file()]
    if not names:
        return
    print()
    try:
        report(Settings(exp_dir=str(plan.exp_dir), task=None, filter=None, select_on=None,
                        baseline=baseline, resamples=10000, plots=plan.plots,
                        folders=names, output_dir=str(folder)))
    except UserError as error:  # (e.g. nothing evaluated yet): the runs themselves are fine
        print(f"no report: {error}")


def main() -> None:
    run_cli(sweep, build_parser().parse_args())


if __name__ == "__main__":
    main()
