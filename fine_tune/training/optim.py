"""Optimiser groups: AdamW (fused where the parameters' device has the kernel), the linear
warmup/decay schedule, and gradient-norm clipping (per gate for LAD), for the model and,
when a method has parameters of its own, for them as a second group."""
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

if TYPE_CHECKING:
    from fine_tune.training.run import TrainingRun


@dataclass
class OptimizerSettings:
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_norm: float
    total_step: int
    warmup_step: int
    restart_step: int = 0  # > 0: after this step, AdamW's moments and the schedule start again

    def schedule(self, step: int) -> float:
        """The learning rate's factor after `step` steps: linear warmup from 0, then linear
        decay to 0 at total_step (transformers' get_linear_schedule_with_warmup). With a
        restart, each of the two stages has its own warmup and decay, the warmup split in
        proportion to their lengths (TinyBERT's two runs, each with its warmup proportion)."""
        start, total, warmup = 0, self.total_step, self.warmup_step
        if self.restart_step:
            first = round(self.warmup_step * self.restart_step / self.total_step)
            if step < self.restart_step:
                total, warmup = self.restart_step, first
            else:
                start, total, warmup = self.restart_step, self.total_step, self.warmup_step - first
        step, length = step - start, total - start
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (length - step) / max(1, length - warmup))

    @classmethod
    def from_args(cls, args, prefix: str = "") -> "OptimizerSettings":
        """Reads --lr ... or --gate_lr ...; a gate schedule left unset follows the model's."""
        def get(name):
            value = getattr(args, prefix + name)
            return getattr(args, name) if value is None else value
        return cls(**{field.name: get(field.name) for field in fields(cls)
                      if field.name != "restart_step"})


def fused_kernels(params: list) -> bool | None:
    """True when the parameters' device has PyTorch's fused AdamW kernel (CUDA, and the
    CPU since torch 2.4) and multi-tensor ops; None (PyTorch's default choice) otherwise,
    e.g. for parameters spread over several devices."""
    devices = {p.device.type for p in params}
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        supported = set(_get_fused_kernels_supported_devices())
    except ImportError:  # (a private helper: if it moves, trust the two devices we test)
        supported = {"cuda", "cpu"}
    floating = all(p.is_floating_point() for p in params)
    return (len(devices) == 1 and devices <= supported and floating) or None


class TrainableGroup:
    """Parameters trained together: AdamW without decay on biases and LayerNorm, a
    linear warmup/decay schedule, and gradient-norm clipping."""

    def __init__(self, name: str, module: nn.Module, settings: OptimizerSettings,
                 clip_units: list[list] | None = None):
        self.name, self.settings = name, settings
        no_decay = {id(p) for m in module.modules() if isinstance(m, nn.LayerNorm)
                    for p in m.parameters(recurse=False)}
        no_decay |= {id(p) for n, p in module.named_parameters() if n.endswith("bias")}
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.clip_units = clip_units or [self.params]
        groups = [
            {"params": [p for p in self.params if id(p) not in no_decay],
             "weight_decay": settings.weight_decay},
            {"params": [p for p in self.params if id(p) in no_decay], "weight_decay": 0.0},
        ]
        # AdamW's fused kernel updates every tensor in one pass; the default for-loop
        # implementation dispatches about six ops per tensor (a 6-layer 384-wide BERT,
        # 105 tensors: 126 ms a step against 27 ms on 2 CPU cores, bench/README.md).
        self.fused = fused_kernels(self.params)
        # Which clip unit each parameter belongs to, for clipping all units in one pass.
        self._unit_of = torch.tensor([u for u, unit in enumerate(self.clip_units) for _ in unit],
                                     device=self.params[0].device if self.params else None)
        self.optimizer = torch.optim.AdamW(
            groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
            fused=self.fused)
        if settings.restart_step:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: settings.schedule(step))  # (a function: not pickled)
        else:
            self.scheduler = get_linear_schedule_with_warmup(
                self.optimizer, settings.warmup_step, settings.total_step)
        self.grad_norm = torch.zeros(())

    def step(self) -> None:
        if len(self.clip_units) == 1:
            # (foreach: the norms and the scaling as two multi-tensor ops, not two per tensor)
            self.grad_norm = nn.utils.clip_grad_norm_(self.clip_units[0], self.settings.max_norm,
                                                      foreach=self.fused)
        else:
            self.grad_norm = self._clip_each_unit()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler.last_epoch == self.settings.restart_step:  # (never when 0)
            self.optimizer.state.clear()  # the second stage's AdamW starts afresh

    def _clip_each_unit(self):
        """clip_grad_norm_ on each unit (LAD: each gate) on its own, as the authors do, but
        for all units at once: a fixed handful of (foreach) ops instead of a handful per
        gate. Returns the norm over all units."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p)
                 for unit in self.clip_units for p in unit]
        norms = torch.stack(torch._foreach_norm(grads))  # one norm per tensor
        sizes = {len(unit) for unit in self.clip_units}
        if len(sizes) == 1:  # (LAD's gates: equal units; a fixed, deterministic order)
            units = torch.linalg.vector_norm(norms.view(len(self.clip_units), -1), dim=1)
        else:
            units = torch.zeros(len(self.clip_units), device=norms.device, dtype=norms.dtype)
            units = units.index_add(0, self._unit_of, norms.square()).sqrt()  # each unit's norm
        scale = torch.clamp(self.settings.max_norm / (units + 1e-6), max=1.0)  # as clip_grad_norm_
        torch._foreach_mul_(grads, scale[self._unit_of].unbind())  # (in place: p.grad)
        return torch.linalg.vector_norm(units)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """A saved optimiser records whether it was fused; the choice must follow the
        device the parameters are on now (a GPU run resumed on the CPU, or the reverse)."""
        optimizer = state["optimizer"]
        optimizer = {**optimizer, "param_groups": [{**group, "fused": self.fused}
                                                   for group in optimizer["param_groups"]]}
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(state["scheduler"])


def make_groups(run: "TrainingRun") -> list[TrainableGroup]:
    """The model's optimiser group, and the objective's (LAD's gates) when it has parameters."""
    args = run.args
    restart = run.objective.restart_step
    groups = [TrainableGroup("model", run.model,
                             replace(OptimizerSettings.from_args(args), restart_step=restart))]
    if any(p.requires_grad for p in run.objective.parameters()):
        # (named "gate", as its checkpoints gate-<step>.pt, whatever the parameters are)
        settings = replace(OptimizerSettings.from_args(args, run.objective.optimizer_prefix),
                           restart_step=run.objective.restart_step)
        groups.append(TrainableGroup("gate", run.objective, settings, run.objective.clip_units()))
    return groups
