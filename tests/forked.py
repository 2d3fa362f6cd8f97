"""Entry scripts in processes of their own without paying for imports again.

A test that must kill a run (SIGKILL mid-step, Ctrl-C) or start several ranks needs
processes of its own, but a fresh Python spends 5-7 s of a 2-core machine importing torch
and transformers before the first step. These helpers fork the test process instead (torch,
transformers and fine_tune are already imported there): the child runs the very script
through runpy, with its own argv, working folder, environment, stdout and stderr, and ends
with the script's exit status; a signal ends it as it would end any process. What only a
new interpreter can show (what is imported at start-up, torchrun's own launcher) is still
tested with subprocesses.

    run_forked(script, *flags, cwd=...)                 # -> CompletedProcess
    (script: a path under the project root, or any absolute path, e.g. a hook that patches
    the loop and then runs the real script)
    start_forked(script, *flags, cwd=...)               # -> Forked (poll/wait/kill)
    spawn_forked(command, log, env)                     # a sweep's local run, forked
    torchrun_forked(script, *flags, cwd=..., nproc=2)   # the ranks as torchrun starts them
"""
import io
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_main(argv: list[str]) -> int:
    """Run the script argv[0] as `__main__` with sys.argv = argv in this process and return
    the exit status the interpreter would give: SystemExit's code (a message printed to
    stderr, status 1), or 1 after printing an escaping exception's traceback."""
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)  # sys.exit("message")
        return 1
    except BaseException:  # as the interpreter reports an escaping exception
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved


def _child(argv: list[str], cwd, env: dict, out: str, err, new_session: bool = False) -> None:
    """In the forked child: never returns (os._exit), whatever happens."""
    code = 1
    try:
        if new_session:  # its own process group, as Popen(start_new_session=True) gives
            os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new process has it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd, where in ((1, out), (2, err)):
            if isinstance(where, int):  # an open file descriptor (a terminal, say)
                os.dup2(where, fd)
                continue
            target = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        os.chdir(cwd)
        os.environ.update(env)
        if "torch" in sys.modules:
            # One thread: an OpenMP pool the parent started does not exist in the child, and
            # a parallel region there would wait for it forever (torch then runs its loops
            # inline; the test processes and torchrun's ranks compute on one thread anyway).
            sys.modules["torch"].set_num_threads(1)
        code = run_main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


class Forked:
    """One forked script, as subprocess.Popen gives one (returncode < 0: ended by a signal)."""

    def __init__(self, script, flags, cwd, env=None, stderr_fd=None, stdout_fd=None,
                 new_session=False):
        self.argv = [str(ROOT / script), *map(str, flags)]
        self._folder = tempfile.mkdtemp(prefix="forked-")
        self._out, self._err = (os.path.join(self._folder, name) for name in ("out", "err"))
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _child(self.argv, cwd, dict(env or {}), self._out if stdout_fd is None else stdout_fd,
                   self._err if stderr_fd is None else stderr_fd, new_session)
        self.returncode, self._texts = None, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:  # ended: its output is kept here and its temporary files removed
                self.returncode = os.waitstatus_to_exitcode(status)
                self._texts = self._read()
                shutil.rmtree(self._folder, ignore_errors=True)
        return self.returncode

    def wait(self, timeout: float = 600):
        deadline = time.time() + timeout
        while self.poll() is None:
            if time.time() > deadline:
                self.kill()
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.wait()

    def _read(self) -> tuple[str, str]:
        return tuple(Path(path).read_text(errors="replace") if os.path.exists(path) else ""
                     for path in (self._out, self._err))

    def stderr_so_far(self) -> str:
        return self.output()[1]

    def output(self) -> tuple[str, str]:
        """stdout and stderr (so far, while it runs)."""
        return self._texts if self._texts is not None else self._read()

    def result(self, timeout: float = 600) -> subprocess.CompletedProcess:
        self.wait(timeout)
        stdout, stderr = self.output()
        return subprocess.CompletedProcess(self.argv, self.returncode, stdout, stderr)


def start_forked(script, *flags, cwd, env=None, stderr_fd=None, stdout_fd=None,
                 new_session=False) -> Forked:
    """The script forked and running; its stdout and stderr to files (read them with
    .output() or .stderr_so_far()) or to stdout_fd and stderr_fd; with new_session, in a
    process group of its own."""
    return Forked(script, flags, cwd, env, stderr_fd, stdout_fd, new_session)


def spawn_forked(command: list, log, env: dict) -> Forked:
    """In place of `LocalExecutor.spawn` (fine_tune/sweep/local.py): the sweep's run
    `python SCRIPT FLAGS...` forked, its output appended to the open file `log`. A
    torchrun command is refused: it needs the real launcher."""
    if command[1:2] == ["-m"]:
        raise AssertionError(f"spawn_forked runs scripts, not {' '.join(command[:3])}")
    return Forked(command[1], command[2:], os.getcwd(), env, log.fileno(), log.fileno())


def run_forked(script, *flags, cwd, env=None, check=False, timeout=600):
    result = Forked(script, flags, cwd, env).result(timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_forked(script, *flags, cwd, nproc=2, env=None, check=True, timeout=600):
    """The ranks of `torchrun --standalone --nproc_per_node N script flags`, each with the
    environment torchrun gives it (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT), forked from this process. As torchrun does, once a rank
    fails the others are stopped (SIGTERM, then SIGKILL after 10 s); the result's status is
    the first failure's (0 if none), stdout and stderr are the ranks' in rank order."""
    common = {"WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
              "TORCHELASTIC_RUN_ID": "forked"} | dict(env or {})
    ranks = [Forked(script, flags, cwd, common | {"RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(nproc)]
    deadline, failed, stopping = time.time() + timeout, None, None
    while any(rank.poll() is None for rank in ranks):
        if failed is None:
            failed = next((rank.returncode for rank in ranks if rank.returncode not in (None, 0)), None)
            if failed is not None:
                stopping = time.time()
                for rank in ranks:
                    rank.send_signal(signal.SIGTERM)
        elif time.time() - stopping > 10:
            for rank in ranks:
                rank.send_signal(signal.SIGKILL)
        if time.time() > deadline:
            for rank in ranks:
                rank.kill()
            raise subprocess.TimeoutExpired(script, timeout)
        time.sleep(0.01)
    if failed is None:
        failed = next((rank.returncode for rank in ranks if rank.returncode != 0), 0)
    outputs = [rank.output() for rank in ranks]
    result = subprocess.CompletedProcess([script, *map(str, flags)], failed,
                                         "".join(out for out, _ in outputs),
                                         "".join(err for _, err in outputs))
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun {script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result
