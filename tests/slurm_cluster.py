"""A real single-node Slurm cluster for the tests, in a folder of its own: munged on its own
socket and key, slurmctld and slurmd on their own ports, state and spool folders, two
fake GPUs (gres backed by /dev/null and /dev/zero, so GPU requests are scheduled on a
machine without one), and two partitions: `main` (the default) and `high`, whose jobs
pre-empt `main`'s by requeueing them (PreemptType=preempt/partition_prio,
PreemptMode=REQUEUE). No accounting database: the sweep must not need one.

Needs Debian's slurm-wlm and munge (slurmctld, slurmd, munged, sbatch, squeue, scontrol)
and root (slurmd runs jobs as their users). `Cluster.start` raises ClusterMissing when
they are absent.
"""
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")


class ClusterMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.node = socket.gethostname().split(".")[0]

    @staticmethod
    def missing() -> str:
        """Why no cluster can start here ('' when one can)."""
        absent = [name for name in BINARIES if shutil.which(name) is None]
        if absent:
            return f"{', '.join(absent)} not installed"
        if os.geteuid() != 0:
            return "the test cluster's slurmd needs root"
        return ""

    def start(self) -> "Cluster":
        why = self.missing()
        if why:
            raise ClusterMissing(why)
        f = self.folder
        for name in ("state", "spool", "log", "munge"):
            (f / name).mkdir(parents=True, exist_ok=True)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = f / "munge" / "munge.socket"
        subprocess.run(["munged", f"--socket={socket_path}", f"--key-file={key}",
                        f"--pid-file={f / 'munge' / 'munged.pid'}", f"--log-file={f / 'munge' / 'munged.log'}",
                        f"--seed-file={f / 'munge' / 'munged.seed'}", "--force"], check=True)
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""ClusterName=tests
SlurmctldHost={self.node}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
SlurmUser=root
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'log' / 'slurmctld.log'}
SlurmdLogFile={f / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=100000
ReturnToService=2
GresTypes=gpu
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
KillWait=5
MinJobAge=300
NodeName={self.node} CPUs={cpus} RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes={self.node} Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=high Nodes={self.node} MaxTime=INFINITE State=UP PriorityTier=10
""")
        (f / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null\n"
                                     f"NodeName={self.node} Name=gpu File=/dev/zero\n")
        subprocess.run(["slurmctld", "-f", str(self.conf), "-c"], check=True, env=self.env)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", "-p", "main").stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the test cluster's node did not come up (state {state!r}); see "
                           f"{f / 'log'}")

    def run(self, *command, check=False) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, check=check)

    def requeue(self, job: str) -> None:
        """scontrol requeue, as a node failure or an administrator does, made eligible at once
        (Slurm holds a requeued job back about two minutes)."""
        self.run("scontrol", "requeue", job, check=True)
        deadline = time.time() + 30
        while self.queue().get(job) not in ("PENDING", None) and time.time() < deadline:
            time.sleep(0.2)
        self.release(job)

    def release(self, job: str) -> None:
        """Let a requeued job, pending, start now instead of in about two minutes. Not at
        once: slurmd refuses a job restarted before its last attempt's credential is
        revoked everywhere (`Job credential revoked`, and the job fails), the race Slurm's
        own hold avoids."""
        time.sleep(2)
        self.run("scontrol", "update", f"jobid={job}", "StartTime=now")

    def queue(self) -> dict:
        """{job id: state} of the jobs Slurm has queued or running."""
        out = self.run("squeue", "-h", "-o", "%i %T").stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def stop(self) -> None:
        """Cancel every job, then end the daemons (SIGKILL for one still there after 3 s)."""
        self.run("scancel", "--full", "-u", "root")
        pids = []
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                pid = int((self.folder / pid_file).read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (OSError, ValueError):
                pass
        deadline = time.time() + 3
        while pids and time.time() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.1)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, already ended, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
