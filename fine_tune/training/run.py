"""`TrainingRun`: the parts of one run (settings, experiment folder, model, frozen
teacher, objective, data, devices) and the wrappers the step calls them through: DDP under
torchrun, torch.compile under --compile, bf16 weight copies under --amp bf16, the
unpadded forward under --unpad."""
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from fine_tune import distributed
from fine_tune.data import TokenizedSplit
from fine_tune.experiment import Experiment
from fine_tune.modeling import bf16_teacher, compiled
from fine_tune.training.objective import Objective
from fine_tune.training.precision import Bf16Linears
from fine_tune.unpad import unpad


@dataclass
class TrainingRun:
    """Everything one run needs; methods build it and call `train`."""
    args: object
    experiment: Experiment
    model: nn.Module                     # the model being trained, saved as model-<step>.pt
    device: torch.device
    objective: Objective
    data: TokenizedSplit
    teacher: nn.Module | None = None     # frozen; gets no gradients
    teacher_device: torch.device | None = None
    eval_data: dict = field(default_factory=dict)  # --eval_during_training: {split: TokenizedSplit}
    amp: bool = field(init=False)              # --amp bf16: autocast forward passes
    dynamic_padding: bool = field(init=False)  # --dynamic_padding: cut batches to their longest row
    devices: set = field(init=False)           # every device the step touches, found once
    forward_model: nn.Module = field(init=False)  # `model`, or its DDP / torch.compile wrapper
    ddp: nn.Module | None = field(init=False)     # the DDP wrapper under torchrun
    teacher_forward: nn.Module | None = field(init=False)  # `teacher`, or compiled
    bf16_linears: dict = field(init=False)     # {"model"/"objective": Bf16Linears} under --amp bf16

    def __post_init__(self):
        self.amp = getattr(self.args, "amp", "fp32") == "bf16"
        self.dynamic_padding = getattr(self.args, "dynamic_padding", False)
        self.devices = set(self.roles().values())
        if self.amp and self.teacher is not None:
            # The frozen teacher's Linear weights become bf16 once, here, in place: its
            # forward then runs without autocast, which would otherwise cast every weight on
            # every step. Its LayerNorms and residual stream stay fp32: autocast's numerics.
            bf16_teacher(self.teacher)
        if getattr(self.args, "unpad", False):
            unpad(self.model)  # its forward only: parameters and state dict unchanged
        self.forward_model, self.ddp = self.model, None
        self.teacher_forward = compiled(self.teacher, self.args) if self.teacher is not None else None
        if distributed.active():
            # Only the trained model is wrapped: the frozen teacher stays a plain module on
            # every rank, and the objective's parameters (gates) are averaged by hand
            # (distributed.average_gradients). The wrapper starts every rank from rank 0's
            # weights; BERT's buffers are constants, so they are not broadcast each step.
            import inspect

            from torch.nn.parallel import DistributedDataParallel
            options = inspect.signature(DistributedDataParallel).parameters
            no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in options
                              else {"broadcast_buffers": False})  # (the name before torch 2.13)
            # (TinyBERT's stages each leave some parameters without a gradient)
            self.forward_model = self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.objective.restart_step), **no_buffer_sync)
            distributed.broadcast_parameters(self.objective)  # the gates start alike too
        self.forward_model = compiled(self.forward_model, self.args)  # --compile
        # bf16 weight copies instead of autocast's casts: not under DDP (its hooks watch
        # the module's own parameters) nor --compile (which fuses the casts itself).
        self.bf16_linears = {}
        if self.amp and self.forward_model is self.model:
            self.bf16_linears = {"model": Bf16Linears(self.model)}
            if any(p.requires_grad for p in self.objective.parameters()):
                self.bf16_linears["objective"] = Bf16Linears(self.objective)

    def gradient_sync(self, last: bool):
        """Under torchrun, the student's gradients are all-reduced in the backward pass of
        the last micro-batch of a step only (no_sync for the others)."""
        if last or self.ddp is None:
            return nullcontext()
        return self.ddp.no_sync()

    def roles(self) -> dict:
        """The device of each part of the step."""
        roles = {"student": self.device}
        if self.teacher is not None:
            roles["teacher"] = self.teacher_device
        gate = next(self.objective.parameters(), None)
        if gate is not None:
            roles["gates"] = gate.device
        return roles
