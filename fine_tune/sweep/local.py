"""`--executor local`: one process per slot, --cpus N slots on the CPU or one slot per GPU
of --gpus (a run with gpus = N takes N of them, under torchrun); each process dies with
the sweep.

An executor starts a Launch, polls it, stops it; scheduler.py decides when.
"""
import ctypes
import os
import signal
import subprocess
import time
from collections import deque

import fine_tune.sweep.plan as plans
from fine_tune.errors import UserError
from fine_tune.sweep.runs import Launch, command_line


def _die_with_parent() -> None:
    """A local run ends when the sweep process dies, even by kill -9 (Linux): a sweep
    started again then resumes it instead of waiting for an orphan."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalExecutor:
    """One process per slot: --cpus N slots on the CPU, or one slot per GPU of --gpus."""
    waits_for_dependencies = True  # (Slurm can hold a job until its teacher's has succeeded)

    def __init__(self, gpus: list[int] | None, cpus: int | None):
        self.gpus, self.cpus = gpus, cpus
        self.free = deque(gpus if gpus else range(cpus or 1))

    def slots_for(self, run: plans.Run, alone: bool = False):
        """The slots `run` starts in, or None (not enough free). With --cpus, a run that
        starts `alone` (every other waiting run waits for a run to end) takes every free
        slot: their cores' threads, which no run could use meanwhile."""
        wanted = run.gpus if self.gpus else 1
        if self.gpus and wanted > len(self.gpus):
            raise UserError(f"{run.label} asks for {wanted} GPUs; --gpus gives {len(self.gpus)}")
        if len(self.free) < wanted:
            return None
        if self.cpus and alone:
            wanted = len(self.free)
        return tuple(self.free.popleft() for _ in range(wanted))

    def release(self, slot: tuple) -> None:
        self.free.extend(slot)

    def describe(self, slot: tuple) -> str:
        return (f"GPU{'s' * (len(slot) > 1)} {','.join(map(str, slot))}" if self.gpus
                else f"CPU slot{'s' * (len(slot) > 1)} {','.join(str(i + 1) for i in slot)}"
                + (f", {self.threads(slot)} threads" if len(slot) > 1 else "") if self.cpus else "")

    def threads(self, slot: tuple) -> int:
        """--cpus: the threads of a run in `slot`: its slots' share of the cores."""
        return max(1, (os.cpu_count() or 1) * len(slot) // self.cpus)

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
            env["OMP_NUM_THREADS"] = str(self.threads(slot))
        return env

    def start(self, launch: Launch) -> None:
        command = command_line(launch.run, launch.argv, len(launch.slot) if self.gpus else 1)
        launch.log.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log, "a", encoding="utf-8") as log:
            log.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(command)}\n")
            log.flush()
            launch.handle = self.spawn(command, log, self.environment(launch.slot) | launch.env)

    @staticmethod
    def spawn(command: list, log, env: dict):
        """The run's process, its output appended to `log` (a Popen-like handle)."""
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)

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
