"""A run once the sweep starts it: what an executor holds (`Launch`), how it ended
(`Outcome`), the process it is (`command_line`), its log (`tail`, `last_line`), and the
timestamped lines the sweep prints as it goes (`say`, `duration`).

Every module of the sweep but plan.py and state.py imports from here; this one imports
only plan.py (`Run`).
"""
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import fine_tune.sweep.plan as plans

ROOT = Path(__file__).resolve().parent.parent.parent  # where the entry scripts are


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


def command_line(run: plans.Run, argv: list, gpus: int) -> list[str]:
    """The process a run is: the script, under torchrun when it has several GPUs."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus}", script_path(run.script), *argv]
    return [sys.executable, script_path(run.script), *argv]


@dataclass
class Launch:
    run: plans.Run
    argv: list             # the flags it runs with (the plan's, plus --resume / device ids)
    log: Path
    handle: object = None
    slot: tuple = ()
    error: str = ""        # why the executor says it failed, when the log cannot
    started: float = field(default_factory=time.time)
    offset: int = -1       # the log's size before this attempt wrote to it (-1: read at creation)
    env: dict = field(default_factory=dict)  # variables of its own (a search trial's number and values)

    def __post_init__(self):
        if self.offset < 0:
            try:
                self.offset = self.log.stat().st_size
            except OSError:
                self.offset = 0

    def output(self) -> list[str]:
        """The non-empty lines this attempt wrote to the run's log (earlier attempts' left out)."""
        try:
            with open(self.log, "rb") as file:
                file.seek(self.offset)
                text = file.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def trained_elsewhere(self) -> bool:
        """This attempt's script refused because another process trains the experiment."""
        return any("is being trained by" in line for line in self.output()[-20:])


@dataclass
class Outcome:
    run: plans.Run
    status: str          # trained, resumed, done, failed, skipped, ...
    seconds: float = 0.0
    note: str = ""
    log: Path | None = None


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
