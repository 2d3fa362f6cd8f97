"""One folder per experiment: exp/<experiment>_<model>_<task>/.

    .lock               held (flock) by the process training into the folder
    config.json         every setting of the run (the parsed flags)
    model_config.json   the model's architecture (a Hugging Face BertConfig)
    tokenizer/          the tokenizer, so evaluation needs neither the hub nor --ptrain_ver
    model-<step>.pt     the model's state dict at that optimiser step
    train_state.pt      what --resume needs beyond the weights (optimisers, schedules, data
                        order, random states), as of the last checkpoint
    log/                tensorboard event files of training
    log/eval/<split>/   tensorboard event files of evaluation on <split>
    train_log.csv       the logged training values (loss terms, learning rates, gradient
                        norms, LAD's gate values, examples/s), one row per --log_step
    results_<split>.csv every metric of the task per evaluated checkpoint, with examples/s
                        (run_fine_tune_eval.py, or --eval_during_training)
    predictions/<step>/MNLI-m.tsv, MNLI-mm.tsv   GLUE submission files
"""
import fcntl
import json
import os
import re
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path


from fine_tune.errors import UserError
from fine_tune.io import atomic_torch_save, atomic_write_json, atomic_write_text, first_line

CHECKPOINT = re.compile(r"^model-(\d+)\.pt$")
LOCK = ".lock"
TRAIN_STATE = "train_state.pt"  # optimisers, schedules, data order and RNG of the last checkpoint
# Flags that may change on --resume: they do not change the computation.
RESUMABLE_CHANGES = {"resume", "overwrite", "log_step", "ckpt_step", "device_id", "tdevice_id",
                     "gate_device_id", "data_dir", "exp_dir", "command",
                     "eval_during_training", "eval_batch_size", "keep_checkpoints",
                     "tf32", "compile",  # (rounding, not the run)
                     "report_to",
                     "method"}  # (recorded by the scripts, not a flag; older runs lack it)
# Flags added after experiments were first recorded, with the value that reproduces what
# those experiments did: a config.json without the flag resumes as if it had that value.
LATER_FLAGS = {"group_by_length": False, "unpad": False, "layer_map": "uniform", "gate_mode": "learned"}


def _load(path: Path, weights_only: bool, fix: str):
    try:
        import torch  # (here: reading configs and results needs no torch)
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # see io.first_line: a damaged file can raise almost anything
        raise UserError(f"cannot read {path}: the file is damaged or not a checkpoint "
                        f"({first_line(error)}); {fix}") from None


class Experiment:
    def __init__(self, exp_dir, experiment: str, model: str, task: str):
        if not experiment or "/" in experiment or experiment in (".", ".."):
            raise UserError(f"--experiment {experiment!r} must be a plain folder name")
        self.experiment, self.suffix = experiment, f"_{model}_{task}"
        self.name = experiment + self.suffix
        self.exp_dir = Path(exp_dir)
        self.path = self.exp_dir / self.name
        self._lock_fd = None

    def refuse_folder_name(self, flag: str = "--experiment") -> None:
        """A new experiment named like a folder (teacher_base_bert_mnli) would become
        teacher_base_bert_mnli_bert_mnli: one line with the name to use instead."""
        short = self.experiment[:-len(self.suffix)]
        if self.experiment.endswith(self.suffix) and short:
            raise UserError(f"{flag} {self.experiment} is a folder name; {flag} takes the "
                            f"experiment's name without {self.suffix}: use {flag} {short}")

    # ---- reading -------------------------------------------------------------
    def require(self, flag: str = "--experiment", what: str = "experiment") -> "Experiment":
        """The experiment must exist; else one line naming what was searched and the fix."""
        if (self.path / "config.json").is_file():
            return self
        self.refuse_folder_name(flag)  # the folder's name given
        names = sorted(p.parent.name[:-len(self.suffix)] for p in self.exp_dir.glob("*/config.json")
                       if p.parent.name.endswith(self.suffix))
        hint = (f"; {what}s there for this model and task: {', '.join(names)}" if names
                else "; it has none for this model and task")
        if not names and list((self.exp_dir / "exp").glob(f"*{self.suffix}/config.json")):
            hint += f" (but {self.exp_dir / 'exp'} has: did you mean --exp_dir {self.exp_dir / 'exp'}?)"
        raise UserError(f"{what} {self.experiment!r} not found: no {self.path}/config.json under "
                        f"--exp_dir {self.exp_dir}{hint}; check {flag}, --model, --task and "
                        "--exp_dir")

    # Settings every experiment's config.json holds and that its readers use.
    REQUIRED = ("task", "max_seq_len", "ptrain_ver", "num_class")

    def config(self) -> dict:
        path = self.require().path / "config.json"
        config = self._read_json(path)
        missing = [key for key in self.REQUIRED if key not in config]
        if missing:
            raise UserError(f"{path} is damaged (no {', '.join(map(repr, missing))}): restore it "
                            "from a copy, or train the experiment again with --overwrite")
        return config

    def model_config(self) -> dict:
        return self._read_json(self.path / "model_config.json")

    def _read_json(self, path: Path) -> dict:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} is missing: {self.name} was not completely written; train it "
                            "again with --overwrite") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{path} is damaged ({first_line(error)}): restore it from a copy, or "
                            "train the experiment again with --overwrite") from None
        if not isinstance(value, dict):
            raise UserError(f"{path} is damaged (not a JSON object): restore it from a copy, or "
                            "train the experiment again with --overwrite")
        return value

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints (temporary files of a save in progress are
        hidden dot-files, so they never match)."""
        if not self.path.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.path.iterdir()
                      if (m := CHECKPOINT.match(p.name)))

    def checkpoint_path(self, step: int, kind: str = "model") -> Path:
        return self.path / f"{kind}-{step}.pt"

    def load_checkpoint(self, step: int, kind: str = "model") -> dict:
        path = self.checkpoint_path(step, kind)
        if not path.is_file():
            steps = self.checkpoint_steps()
            raise UserError(f"checkpoint {path} not found; {self.describe_checkpoints(steps)}")
        return _load(path, True, "restore it, or delete it and run again (with another "
                                 "checkpoint where one is named)")

    def describe_checkpoints(self, steps=None) -> str:
        steps = self.checkpoint_steps() if steps is None else steps
        if not steps:
            return f"{self.name} has no checkpoints yet (model-<step>.pt): train it first"
        kept = ""
        try:  # a run with --keep_checkpoints deleted the others
            keep = json.loads((self.path / "config.json").read_text()).get("keep_checkpoints")
            kept = f" (it ran with --keep_checkpoints {keep}, which deleted the others)" if keep else ""
        except (OSError, ValueError, AttributeError):
            pass
        return f"{self.name} has checkpoints at steps {', '.join(map(str, steps))}{kept}"

    def load_train_state(self) -> dict | None:
        path = self.path / TRAIN_STATE
        if not path.is_file():
            return None
        return _load(path, False, "it cannot be resumed from; start again with --overwrite")

    # ---- writing -------------------------------------------------------------
    @contextmanager
    def training(self, config: dict, overwrite: bool, resume: bool = False):
        """Hold the folder for one training run: locked against a second run, then
        continued (--resume, same settings), emptied (--overwrite) or made new. A folder
        with checkpoints is never mixed with a new run. Under torchrun rank 0 does this
        for all ranks, which wait for its verdict."""
        from fine_tune import distributed
        distributed.agreed(lambda: self._enter(config, overwrite, resume), main_only=True)
        try:
            yield self
        finally:
            self._unlock()

    def _enter(self, config: dict, overwrite: bool, resume: bool) -> None:
        if overwrite and resume:
            raise UserError("--resume continues the experiment and --overwrite deletes it: pass one")
        existed = self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {self.path} ({error.strerror}): check --exp_dir") from None
        try:
            self._lock()
            self._prepare(config, overwrite, resume)
        except BaseException:
            self._unlock()
            if not existed:
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def _lock(self) -> None:
        """flock on .lock: the kernel releases it when the process ends, even by kill -9,
        so a killed run's folder can be resumed at once."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path} is being trained by {holder}: wait for it to end (or "
                            "stop it, then pass --resume), or choose another --experiment") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _prepare(self, config: dict, overwrite: bool, resume: bool) -> None:
        steps = self.checkpoint_steps()
        continuing = resume and (self.path / "config.json").is_file()
        if continuing:
            self._check_same_run(config)
        elif steps and not overwrite:
            raise UserError(f"{self.path} already has checkpoints (steps {', '.join(map(str, steps))}): "
                            "pass --resume to continue that run, --overwrite to delete it, or "
                            "choose another --experiment")
        try:
            for item in self.path.iterdir():
                stale = item.name.startswith(".") and item.name.endswith(".tmp")
                if overwrite and item.name != LOCK or stale:
                    # (a .tmp is left by a run killed while saving)
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
        except OSError as error:
            raise UserError(f"cannot empty {self.path} ({error.strerror}): fix its permissions") from None
        if not continuing:
            record = dict(config)
            record["command"] = " ".join(sys.argv)
            self.write_json("config.json", record)

    def _check_same_run(self, config: dict) -> None:
        saved = self.config()
        used, now = saved.get("world_size", 1), config.get("world_size", 1)  # (older runs: 1)
        if used != now:
            how = (f"torchrun --nproc_per_node {used} (over all machines: {used} processes)"
                   if used > 1 else "a single process, without torchrun")
            raise UserError(f"--resume with {now} process{'es' * (now > 1)}, but {self.name} was "
                            f"trained by {used}: resume it with {how}; the data order and "
                            "random states were saved for that many")
        saved = LATER_FLAGS | saved | {"world_size": used}
        shown = lambda value: "(default)" if value is None else repr(value)  # noqa: E731
        changed = [f"--{key} {shown(saved.get(key))} -> {shown(value)}"
                   for key, value in sorted(config.items())
                   if key not in RESUMABLE_CHANGES and saved.get(key) != _jsonable(value)
                   # (runs recorded before --ptrain_ver was resolved: the same folder)
                   and not (key == "ptrain_ver" and isinstance(saved.get(key), str)
                            and pretrained_source(saved[key]) == value)]
        if changed:
            raise UserError(f"--resume with settings that change the run ({'; '.join(changed)}): "
                            "resume with the original flags, or start a new --experiment")

    def write_text(self, relative_path: str, text: str) -> Path:
        path = self.path / relative_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {path.parent} ({error.strerror}): fix the permissions "
                            f"of {self.path} or free disk space") from None
        self._write(atomic_write_text, text, path)
        return path

    def check_writable(self, relative_path: str) -> None:
        """Fail now, before hours of computing, if `relative_path` could not be written;
        leaves nothing behind (folders it had to make are removed again)."""
        path = self.path / relative_path
        if path.is_dir():
            raise UserError(f"cannot write {path}: a folder of that name is in the way; move it")
        made = [folder for folder in reversed(path.parents) if folder.is_relative_to(self.path)
                and not folder.exists()]
        # (a name of this process's own: two evaluations checking at once must not remove
        # each other's probe)
        probe = path.parent / f".{path.name}.{os.getpid()}.check"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text("", probe)
            probe.unlink(missing_ok=True)
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror or error}): fix the "
                            f"permissions of {self.path} or free disk space") from None
        finally:
            for folder in reversed(made):
                try:
                    folder.rmdir()
                except OSError:
                    pass

    def write_json(self, name: str, obj) -> None:
        self._write(atomic_write_json, obj, self.path / name)

    def save_checkpoint(self, state_dict: dict, step: int, kind: str = "model") -> None:
        # CPU tensors: a plain torch.load works on a machine without the training GPU.
        state_dict = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
        self._write(atomic_torch_save, state_dict, self.checkpoint_path(step, kind))

    def save_train_state(self, state: dict) -> None:
        self._write(atomic_torch_save, state, self.path / TRAIN_STATE)

    def _write(self, write, obj, path: Path) -> None:
        try:
            write(obj, path)
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror or error}): free disk space or "
                            f"fix the permissions of {self.path}; files saved before are intact") from None


def pretrained_source(ptrain_ver: str) -> str:
    """--ptrain_ver as config.json records it: a local folder as its absolute path (so a
    student distilled from another working folder still finds it; symbolic links are kept
    as named, not followed), a hub name as given."""
    path = Path(ptrain_ver).expanduser()
    return os.path.abspath(path) if path.is_dir() else ptrain_ver


def _jsonable(value):
    """A flag's value as config.json stores it (paths become strings, tuples lists)."""
    return json.loads(json.dumps(value, default=str))
