"""`--executor slurm` and `--executor submitit_local`: one submitit job per run. On Slurm a
job waits for its teacher's job (afterok) and is requeued with --resume at each time limit
(`Command.checkpoint`); submitit's local executor runs the same jobs as processes here.

An executor starts a Launch, polls it, stops it; scheduler.py decides when.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import fine_tune.sweep.plan as plans
from fine_tune.errors import UserError
from fine_tune.io import atomic_write_text
from fine_tune.sweep.runs import ROOT, Launch, command_line, say


class Command:
    """What a submitit job runs: the command, its output appended to the run's log. On a
    pre-emption or a time-out Slurm signals the job; submitit then asks `checkpoint` for
    what to requeue: the same command with --resume."""

    def __init__(self, run: plans.Run, argv: list, log: Path, gpus: int, cwd: str,
                 env: dict | None = None):
        self.run, self.argv, self.log, self.gpus, self.cwd = run, argv, log, gpus, cwd
        self.env = dict(env or {})  # the run's own variables (a search trial's)
        self.process = None

    def __call__(self) -> int:
        os.chdir(self.cwd)
        os.environ.update(getattr(self, "env", {}))  # (jobs pickled before it had none)
        argv = self.argv
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
            # Slurm requeued this job (a node failure, scontrol requeue, a pre-emption): it
            # runs the submitted command again, which must continue the killed attempt.
            argv = resumed(self.run, argv)
        command = command_line(self.run, argv, self.gpus)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(command)}\n")
            log.flush()
            # The run ignores the signal Slurm sends before a time limit (USR2): submitit's
            # handler in this process answers it (`checkpoint`: stop the run, requeue the
            # job with --resume). Killed by it as well, the run could end this job as
            # failed before the handler had requeued it.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, preexec_fn=_ignore_usr2)
            code = self.process.wait()
        if code:
            raise RuntimeError(f"{self.run.label} exited with status {code}; see {self.log}")
        return code

    def checkpoint(self, *args, **kwargs):
        import submitit
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        return submitit.helpers.DelayedSubmission(Command(self.run, resumed(self.run, self.argv),
                                                          self.log, self.gpus, self.cwd,
                                                          getattr(self, "env", {})))


def _ignore_usr2() -> None:
    import signal
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def resumed(run: plans.Run, argv: list) -> list:
    """A training run's flags to continue it (--resume, without --overwrite); an evaluation
    or prediction just runs again."""
    if "--resume" in argv or run.kind != "train":
        return argv
    return [a for a in argv if a != "--overwrite"] + ["--resume"]


GONE_FOR_S = 5  # seconds a job must stay out of Slurm's queue to count as ended


# The states of a job that has ended (squeue --states=all lists them for MinJobAge).
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED"}


def queue_states() -> dict:
    """{job id: state} of every job Slurm still has queued or running, a requeued one
    included (squeue, which needs no accounting database)."""
    result = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %T"], capture_output=True,
                            text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"squeue failed: {(result.stderr or result.stdout).strip()[:300]}")
    states = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    return {job: state for job, state in states.items() if state.strip() not in ENDED}


class SubmititExecutor:
    """One submitit job per run: Slurm (`--executor slurm`), or submitit's local executor
    (`--executor submitit_local`, which runs the same jobs as processes on this machine)."""

    def __init__(self, folder: Path, cluster: str, args):
        # The job unpickles a fine_tune.sweep.slurm.Command: it must import this project
        # wherever it starts (the environment travels with the job, on Slurm as locally).
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
        self._queue, self._queue_read = {}, 0.0
        self.gone_since = {}  # job id -> when the queue first no longer listed it
        # Every job submitted, by run, kept in the sweep folder: a sweep started again
        # (after kill -9, or a login node that went down) watches the jobs still queued or
        # running instead of submitting them a second time.
        self.record = folder / "slurm_jobs.json"
        try:
            self.submitted = json.loads(self.record.read_text())
        except (OSError, ValueError):
            self.submitted = {}

    def queue(self) -> dict:
        """Slurm's queue, read at most once a second however many jobs are polled."""
        if time.time() - self._queue_read > 1:
            self._queue, self._queue_read = queue_states(), time.time()
        return self._queue

    def new_executor(self):
        """One per job: submitit keeps parameters from one submission to the next (a
        student's dependency would stay on every later job)."""
        import submitit
        return submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                     slurm_max_num_timeout=1000)

    def slots_for(self, run, alone: bool = False):
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

    def job_gpus(self, run: plans.Run) -> int:
        """GPUs a Slurm job asks for: a training run --slurm_gpus_per_run (more when the plan
        gives it gpus = N), an evaluation or prediction none unless the plan gives it gpus;
        0 is a CPU-only job."""
        if run.gpus_given:
            return max(run.gpus, self.gpus_per_run) if run.kind == "train" else run.gpus
        return self.gpus_per_run if run.kind == "train" else 0

    @staticmethod
    def key(run: plans.Run) -> str:
        return f"{run.number} {run.script} {run.experiment}"

    def attach(self, launch: Launch) -> bool:
        """Watch the job an earlier start of the sweep submitted for this run, when Slurm
        still has it; True if so."""
        import submitit
        job_id = self.submitted.get(self.key(launch.run))
        if self.cluster != "slurm" or job_id is None or job_id not in self.queue():
            return False
        launch.handle = submitit.SlurmJob(folder=self.folder, job_id=job_id)
        self.jobs[launch.run.number] = launch.handle
        say(f"           {launch.run.label}: Slurm job {job_id}, submitted by an earlier start, "
            "is still queued or running: watching it instead of submitting it again")
        return True

    def start(self, launch: Launch) -> None:
        if self.attach(launch):
            return
        # GPUs of the job, and processes of its torchrun when more than one
        gpus = self.job_gpus(launch.run) if self.cluster == "slurm" else 1
        parameters = {k: v for k, v in self.common.items() if v is not None}
        parameters["name"] = f"sweep-{launch.run.experiment}"
        if self.cluster == "slurm":
            after = [self.jobs[n].job_id for n in launch.run.needs if n in self.jobs]
            parameters |= {"tasks_per_node": 1} | ({"gpus_per_node": gpus} if gpus else {})
            if after:
                parameters["slurm_dependency"] = "afterok:" + ":".join(after)
        executor = self.new_executor()
        executor.update_parameters(**parameters)
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        launch.handle = executor.submit(Command(launch.run, launch.argv, launch.log, gpus,
                                                     os.getcwd(), launch.env))
        self.jobs[launch.run.number] = launch.handle
        if self.cluster == "slurm":
            self.submitted[self.key(launch.run)] = launch.handle.job_id
            atomic_write_text(json.dumps(self.submitted, indent=1), self.record)

    def poll(self, launch: Launch):
        job = launch.handle
        if self.cluster == "slurm":
            # Slurm's queue says whether a job still runs (submitit's sacct needs an
            # accounting database, and a requeued job's killed attempt may have left a
            # result file behind). A job the queue no longer has is ended: its result, or
            # none at all (cancelled or killed outside the sweep) - never waited for.
            if job.job_id in self.queue():
                self.gone_since.pop(job.job_id, None)
                return None
            # A job being requeued (scontrol requeue, a pre-emption) can drop out of the
            # queue for a moment, after its killed attempt wrote a failed result: it counts
            # as ended only once it has stayed out of the queue for a few seconds.
            gone = self.gone_since.setdefault(job.job_id, time.time())
            if time.time() - gone < GONE_FOR_S:
                return None
            if not job.paths.result_pickle.exists():
                launch.error = (f"Slurm no longer has job {job.job_id} and it left no result "
                                f"(cancelled, or killed outside the sweep); see {launch.log}")
                return 1
        elif not job.done():
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
