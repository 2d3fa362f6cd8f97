"""One folder per experiment: exp/<experiment>_<model>_<task>/.

    config.json         every setting of the run (the parsed flags)
    model_config.json   the model's architecture (a Hugging Face BertConfig)
    tokenizer/          the tokenizer, so evaluation needs neither the hub nor --ptrain_ver
    model-<step>.pt     the model's state dict at that optimiser step
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
from fine_tune.io import atomic_torch_save, atomic_write_json

CHECKPOINT = re.compile(r"^model-(\d+)\.pt$")


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
        return torch.load(path, map_location="cpu", weights_only=True)

    # ---- writing -------------------------------------------------------------
    def create(self, config: dict, overwrite: bool) -> None:
        """Make the folder for a new run; refuse to mix two runs in one folder."""
        steps = self.checkpoint_steps()
        if steps and not overwrite:
            raise UserError(f"{self.path} already has checkpoints (steps {', '.join(map(str, steps))}): "
                            "choose another --experiment, or pass --overwrite to delete them")
        if self.path.exists() and overwrite:
            for item in self.path.iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {self.path} ({error.strerror}): check --exp_dir") from None
        record = dict(config)
        record["command"] = " ".join(sys.argv)
        self.write_json("config.json", record)

    def write_json(self, name: str, obj) -> None:
        atomic_write_json(obj, self.path / name)

    def save_checkpoint(self, state_dict: dict, step: int, kind: str = "model") -> None:
        atomic_torch_save(state_dict, self.checkpoint_path(step, kind))
