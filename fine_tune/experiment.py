"""One folder per experiment: exp/<experiment>_<model>_<task>/.

    config.json         every setting of the run (the parsed flags)
    model_config.json   the model's architecture (a Hugging Face BertConfig)
    tokenizer/          the tokenizer, so evaluation needs neither the hub nor --ptrain_ver
    model-<step>.pt     the model's state dict at that optimiser step
    train_state.pt      what --resume needs beyond the weights (optimisers, schedules, data
                        order, random states), as of the last checkpoint
    log/                tensorboard event files (training and evaluation)
    results_<split>.csv accuracy and macro-F1 of every checkpoint (run_fine_tune_eval.py)
    predictions/<step>/MNLI-m.tsv, MNLI-mm.tsv   GLUE submission files
"""
import json
import re
import shutil
import sys
from pathlib import Path

import torch

from fine_tune.errors import UserError
from fine_tune.io import atomic_torch_save, atomic_write_json, atomic_write_text, first_line

CHECKPOINT = re.compile(r"^model-(\d+)\.pt$")
TRAIN_STATE = "train_state.pt"  # optimisers, schedules, data order and RNG of the last checkpoint
# Flags that may change on --resume: they do not change the computation.
RESUMABLE_CHANGES = {"resume", "overwrite", "log_step", "ckpt_step", "device_id", "tdevice_id",
                     "gate_device_id", "data_dir", "exp_dir", "command"}


def _load(path: Path, weights_only: bool, fix: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # see io.first_line: a damaged file can raise almost anything
        raise UserError(f"cannot read {path}: the file is damaged or not a checkpoint "
                        f"({first_line(error)}); {fix}") from None


class Experiment:
    def __init__(self, exp_dir, experiment: str, model: str, task: str):
        if not experiment or "/" in experiment or experiment in (".", ".."):
            raise UserError(f"--experiment {experiment!r} must be a plain folder name")
        self.name = f"{experiment}_{model}_{task}"
        self.path = Path(exp_dir) / self.name

    # ---- reading -------------------------------------------------------------
    def require(self) -> "Experiment":
        if not (self.path / "config.json").is_file():
            existing = sorted(p.parent.name for p in self.path.parent.glob("*/config.json"))
            hint = f"; experiments in {self.path.parent}: {', '.join(existing)}" if existing else ""
            raise UserError(f"no experiment at {self.path} (config.json missing): check "
                            f"--experiment, --model and --task{hint}")
        return self

    def config(self) -> dict:
        return json.loads((self.require().path / "config.json").read_text())

    def model_config(self) -> dict:
        return json.loads((self.path / "model_config.json").read_text())

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
            raise UserError(f"checkpoint {path} not found; {self.name} has checkpoints at "
                            f"steps {', '.join(map(str, steps)) or '(none)'}")
        return _load(path, True, "delete it and pick another checkpoint")

    def load_train_state(self) -> dict | None:
        path = self.path / TRAIN_STATE
        if not path.is_file():
            return None
        return _load(path, False, "it cannot be resumed from; start again with --overwrite")

    # ---- writing -------------------------------------------------------------
    def create(self, config: dict, overwrite: bool, resume: bool = False) -> None:
        """Make the folder for a run. A folder with checkpoints is never mixed with a new
        run: it is continued (--resume, same settings) or emptied (--overwrite)."""
        if overwrite and resume:
            raise UserError("--resume continues the experiment and --overwrite deletes it: pass one")
        steps = self.checkpoint_steps()
        continuing = resume and (self.path / "config.json").is_file()
        if continuing:
            self._check_same_run(config)
        elif steps and not overwrite:
            raise UserError(f"{self.path} already has checkpoints (steps {', '.join(map(str, steps))}): "
                            "pass --resume to continue that run, --overwrite to delete it, or "
                            "choose another --experiment")
        if self.path.exists() and overwrite:
            for item in self.path.iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob(".*.tmp"):  # left by a run killed while saving
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        except OSError as error:
            raise UserError(f"cannot create {self.path} ({error.strerror}): check --exp_dir") from None
        if not continuing:
            record = dict(config)
            record["command"] = " ".join(sys.argv)
            self.write_json("config.json", record)

    def _check_same_run(self, config: dict) -> None:
        saved = self.config()
        changed = [f"--{key} {saved.get(key)!r} -> {value!r}" for key, value in sorted(config.items())
                   if key not in RESUMABLE_CHANGES and saved.get(key) != _jsonable(value)]
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


def _jsonable(value):
    """A flag's value as config.json stores it (paths become strings, tuples lists)."""
    return json.loads(json.dumps(value, default=str))
