"""The one training loop, shared by teacher fine-tuning and every distillation method.

A method is an `Objective`: it turns the model's outputs (and a frozen teacher's, if
any) into named loss terms, and may own trainable modules of its own (LAD's gates),
which get their own optimiser, schedule, clipping and device. Everything else, from
batching to checkpoints, is here, once.
"""
import csv
import io
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from transformers import get_linear_schedule_with_warmup

from fine_tune import distributed
from fine_tune.data import NUM_CLASSES, TokenizedSplit, load_tokenized, task_file
from fine_tune.errors import Interrupted, SharedError, UserError
from fine_tune.experiment import Experiment
from fine_tune.glue import get_task
from fine_tune.heads import Classification
from fine_tune.modeling import autocast, bf16_teacher, compiled, prepared_attention_mask
from fine_tune.progress import interactive, log_line, progress
from fine_tune.results import TRAIN_LOG, dev_split
from fine_tune.settings import derive


class Objective(nn.Module):
    """A method's loss. `forward` returns named, already weighted loss terms whose sum
    is minimised; parameters registered on the objective are trained as a separate
    group ("gate")."""
    needs_hidden_states = False
    padding_invariant = False  # True when padding beyond the longest row leaves the loss unchanged

    def forward(self, student_out, teacher_out, labels) -> dict:
        raise NotImplementedError

    def clip_units(self) -> list[list]:
        """Parameter lists whose gradient norms are clipped separately."""
        return [list(self.parameters())]

    def statistics(self) -> dict:
        """Values to watch that are not losses, from the last forward: {tag: detached
        tensor on the device, a scalar or a vector}, logged with the loss terms (LAD: one
        vector of every gate's mean z, one of the mean of (z - 1/2)^2). Each must be a
        mean over the forward's rows: the trainer averages it over the micro-batches by
        rows and over the ranks, which gives the step's value over its whole batch, and
        keeps one value per step until --log_step."""
        return {}

    def interval_statistics(self, steps: dict) -> dict:
        """{tag: tensor} to log from `steps` ({tag: tensor of the interval's steps by the
        statistic's shape}, each row a step's value over its whole batch): by default the
        mean over the steps; LAD first turns each step's two means into the step's
        standard deviation of z."""
        return {tag: values.mean(0) for tag, values in steps.items()}

    def name_statistics(self, values: dict) -> dict:
        """{logged name: number} from `statistics()`'s tags and averaged values (floats,
        or lists of them for vectors)."""
        return values


class FineTuning(Objective):
    """Plain fine-tuning: the task head's supervised loss (cross-entropy against the gold
    class, logged as 'ce'; MSE against the gold score for a regression task, 'mse')."""
    padding_invariant = True

    def __init__(self, head=Classification):
        super().__init__()
        self.head = head

    def forward(self, student_out, teacher_out, labels):
        return {self.head.term: self.head.hard(student_out.logits, labels)}



class Bf16Linears:
    """bf16 copies of a module's nn.Linear weights and biases, for --amp bf16 without
    autocast's per-step weight casts. Autocast casts every fp32 weight to bf16 in each
    forward pass and every bf16 weight gradient back to fp32 in the backward pass: two
    small kernels per tensor per micro-batch. Here the copies are refreshed once per step
    in one foreach copy, the forward pass uses them (torch.func.functional_call), and
    their gradients reach the fp32 weights in one foreach copy for the first micro-batch
    of a step (a foreach copy and a foreach add for each later one). The values are the
    ones autocast would use, so the gradients are the same (tested bitwise on the CPU); a
    weight no micro-batch used keeps no gradient, as under autocast."""

    def __init__(self, module: nn.Module):
        named = [(f"{name}.{kind}" if name else kind, getattr(sub, kind))
                 for name, sub in module.named_modules() if isinstance(sub, nn.Linear)
                 for kind in ("weight", "bias") if getattr(sub, kind) is not None]
        named = [(name, p) for name, p in named if p.requires_grad]
        self.names = [name for name, _ in named]
        self.masters = [p for _, p in named]
        self.copies = [torch.empty_like(p, dtype=torch.bfloat16).requires_grad_() for p in self.masters]
        self.grads = [torch.empty_like(p) for p in self.masters]    # the fp32 gradients
        self.staging = None  # a later micro-batch's gradients (made when --accum_step needs them)
        self.used = [False] * len(self.masters)
        self.refresh()

    def refresh(self) -> None:
        """Before a step: the copies take the weights of the last update."""
        with torch.no_grad():
            torch._foreach_copy_(self.copies, self.masters)
        self.folded, self.used = 0, [False] * len(self.masters)

    def parameters(self) -> dict:
        return dict(zip(self.names, self.copies))

    def fold_gradients(self) -> None:
        """After a backward pass: the copies' gradients into the fp32 weights' (an unused
        tensor's gradient counts as zeros), and the copies' cleared."""
        self.used = [used or c.grad is not None for used, c in zip(self.used, self.copies)]
        grads = [c.grad if c.grad is not None else torch.zeros_like(c) for c in self.copies]
        with torch.no_grad():
            if self.folded == 0:
                torch._foreach_copy_(self.grads, grads)
            else:
                if self.staging is None:
                    self.staging = [torch.empty_like(p) for p in self.masters]
                torch._foreach_copy_(self.staging, grads)
                torch._foreach_add_(self.grads, self.staging)
        self.folded += 1
        for copy, master, grad, used in zip(self.copies, self.masters, self.grads, self.used):
            copy.grad, master.grad = None, grad if used else None


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

    @classmethod
    def from_args(cls, args, prefix: str = "") -> "OptimizerSettings":
        """Reads --lr ... or --gate_lr ...; a gate schedule left unset follows the model's."""
        def get(name):
            value = getattr(args, prefix + name)
            return getattr(args, name) if value is None else value
        return cls(**{name: get(name) for name in cls.__dataclass_fields__})


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
        self.fused = all(p.is_cuda for p in self.params) or None  # fused kernels on CUDA only
        # Which clip unit each parameter belongs to, for clipping all units in one pass.
        self._unit_of = torch.tensor([u for u, unit in enumerate(self.clip_units) for _ in unit],
                                     device=self.params[0].device if self.params else None)
        self.optimizer = torch.optim.AdamW(
            groups, lr=settings.lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
            fused=self.fused)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, settings.warmup_step, settings.total_step)
        self.grad_norm = torch.zeros(())

    def step(self) -> None:
        if len(self.clip_units) == 1:
            self.grad_norm = nn.utils.clip_grad_norm_(self.clip_units[0], self.settings.max_norm)
        else:
            self.grad_norm = self._clip_each_unit()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

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


class BatchOrder:
    """Shuffled batches, epoch after epoch, the last batch of an epoch possibly smaller.
    Epoch e's permutation depends only on (seed, e), so (epoch, position) is the whole
    state of the data order."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.epoch, self.position = 0, 0
        self._permutation = None

    def next_batch(self) -> torch.Tensor:
        if self.position >= self.num_examples:
            self.epoch, self.position, self._permutation = self.epoch + 1, 0, None
        if self._permutation is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._permutation = torch.randperm(self.num_examples, generator=generator)
        rows = self._permutation[self.position:self.position + self.batch_size]
        self.position += len(rows)
        return rows

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._permutation = state["epoch"], state["position"], None


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
            self.forward_model = self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                **no_buffer_sync)
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


def check_padding(args, objective: Objective) -> None:
    if getattr(args, "dynamic_padding", False) and not objective.padding_invariant:
        raise UserError("--dynamic_padding would change this method's loss (its hidden-state "
                        "terms or gates depend on the padded length --max_seq_len); leave it off")


def check_training_args(args) -> None:
    """Flag combinations argparse cannot check on its own."""
    task_file(args.task, args.dataset)  # the task has that split
    labelled = get_task(args.task).labelled_splits()
    during = getattr(args, "eval_during_training", None) or []
    for split in during:
        if split not in labelled:
            raise UserError(f"--eval_during_training {split}: --task {args.task} has no labelled "
                            f"split {split!r}; use {' or '.join(labelled)}")
    dev = dev_split(get_task(args.task))
    if during and getattr(args, "keep_checkpoints", None) and dev not in during:
        raise UserError(f"--keep_checkpoints keeps the best checkpoint on {dev}, but "
                        f"--eval_during_training {','.join(during)} does not score it: add {dev} "
                        f"(--eval_during_training {','.join([dev, *during])})")
    expected = NUM_CLASSES[args.task]
    if getattr(args, "num_class", None) is not None and args.num_class != expected:
        has = f"has {expected} classes" if expected > 1 else "is a regression with one output"
        raise UserError(f"--num_class {args.num_class} does not match --task {args.task}, which "
                        f"{has}; use --num_class {expected} (or leave it out)")
    if args.batch_size % args.accum_step:
        raise UserError(f"--batch_size {args.batch_size} is not divisible by --accum_step "
                        f"{args.accum_step}; the effective batch is --batch_size, split into "
                        "--accum_step equal micro-batches")
    for prefix in ("", "gate_"):
        if not hasattr(args, prefix + "total_step"):
            continue
        settings = OptimizerSettings.from_args(args, prefix)  # gate values default to the model's
        total, warmup = settings.total_step, settings.warmup_step
        if total is None or warmup is None:  # (--epoch, --warmup_rate: checked once counted)
            continue
        if warmup > total:
            raise UserError(f"--{prefix}warmup_step {warmup} is larger than --{prefix}total_step "
                            f"{total}; the warmup must end within training")


def resolve_schedule(args, num_examples: int):
    """The settings with --epoch / --warmup_rate (and the gates' --gate_epoch /
    --gate_warmup_rate) turned into steps as the authors' scripts count them:
    round(num_examples / batch_size * epochs) and round(total steps * rate). Says what it
    computed in one line per group."""
    changes = {}
    for prefix in ("", "gate_"):
        if not hasattr(args, prefix + "epoch"):
            continue
        total = getattr(args, prefix + "total_step")
        epoch, rate = getattr(args, prefix + "epoch"), getattr(args, prefix + "warmup_rate")
        said = []
        if epoch is not None:
            total = max(1, round(num_examples / args.batch_size * epoch))
            changes[prefix + "total_step"] = total
            said.append(f"--{prefix}epoch {epoch:g} on {num_examples} examples at --batch_size "
                        f"{args.batch_size} is --{prefix}total_step {total}")
        if rate is not None:
            total = total if total is not None else changes.get("total_step", args.total_step)
            changes[prefix + "warmup_step"] = round(total * rate)
            said.append(f"--{prefix}warmup_rate {rate:g} is --{prefix}warmup_step "
                        f"{changes[prefix + 'warmup_step']}")
        if said:
            print("; ".join(said))
    if not changes:
        return args
    args = derive(args, **changes)
    check_training_args(args)  # the warmup must still end within training
    return args


def training_data(args, tokenizer):
    """(settings, training split, {split: --eval_during_training split}), tokenized (rank 0
    first under torchrun: it writes the token cache, the others read it), before training
    starts, so a missing file stops the run at once; the settings with --epoch /
    --warmup_rate turned into steps, now that the number of examples is known."""
    def load():
        return (load_tokenized(args.data_dir, args.task, args.dataset, tokenizer, args.max_seq_len),
                {split: load_tokenized(args.data_dir, args.task, split, tokenizer, args.max_seq_len)
                 for split in getattr(args, "eval_during_training", None) or []})
    data, eval_data = distributed.main_first(load)
    with distributed.same_on_every_rank():
        return resolve_schedule(args, len(data)), data, eval_data


def _to(batch: dict, device: torch.device) -> dict:
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}


def loss_terms(run: TrainingRun, rows: torch.Tensor) -> dict:
    """Forward passes of one micro-batch and the objective's loss terms. Under --amp bf16
    the matrix work runs in bf16 (the student's under autocast, the frozen teacher's in
    bf16 Linear weights, its hidden states fp32); the objectives compute losses and
    softmaxes in fp32."""
    batch = run.data.batch(rows, trim=run.dynamic_padding)
    hidden = run.objective.needs_hidden_states
    with autocast(run.devices, run.amp):
        inputs = prepared_attention_mask(_to(batch, run.device))
        labels = inputs.pop("labels")
        outputs = _call(run, "model", run.forward_model, kwargs=inputs | {"output_hidden_states": hidden})
        teacher_outputs = None
        if run.teacher is not None:
            # no_grad rather than inference_mode: the gates take teacher states as inputs
            # of their own autograd graph.
            # Under --amp bf16 the teacher's Linears are bf16 (modeling.bf16_teacher) and it
            # runs outside autocast, with autocast's outputs: fp32 hidden states, bf16
            # logits; the losses are computed in fp32.
            with torch.no_grad(), torch.autocast(run.teacher_device.type, enabled=False):
                if run.teacher_device != run.device:  # copy the batch once per device
                    inputs = prepared_attention_mask(
                        _to({k: v for k, v in batch.items() if k != "labels"}, run.teacher_device))
                teacher_outputs = run.teacher_forward(**inputs, output_hidden_states=hidden)
        return _call(run, "objective", run.objective, args=(outputs, teacher_outputs, labels))


def _call(run: TrainingRun, role: str, module: nn.Module, args=(), kwargs=None):
    """module(*args, **kwargs), with its Linear weights replaced by their bf16 copies when
    the run keeps them (see Bf16Linears)."""
    copies = run.bf16_linears.get(role)
    if copies is None:
        return module(*args, **(kwargs or {}))
    return torch.func.functional_call(module, copies.parameters(), args, kwargs, strict=False)


def accumulate_gradients(run: TrainingRun, rows: torch.Tensor, accum_step: int,
                         statistics: dict | None = None) -> dict:
    """Backward over the batch `rows` in `accum_step` micro-batches; the gradients are those
    of the full batch's mean loss. Returns the batch's loss terms (detached); the
    objective's statistics are added, averaged the same way, to `statistics` if given.

    Under torchrun `rows` is the global batch: this rank computes its slice, weighted by
    world size / len(rows) per row, so that the average over ranks is the full batch's
    mean; the returned terms are this rank's share, averaged over ranks when logged."""
    batch = None  # the loss terms, weighted, as one vector
    world = distributed.world_size()
    local = distributed.shard(rows)
    # A short last batch: no empty micro-batches. A rank left without rows (a last batch
    # smaller than the world) still runs one, weighted 0, to join the reduction.
    chunks = local.tensor_split(min(accum_step, len(local))) if len(local) else [rows[:1]]
    for i, chunk in enumerate(chunks):
        weight = len(chunk) * world / len(rows) if len(local) else 0.0  # terms are micro-batch means
        with run.gradient_sync(last=i == len(chunks) - 1):
            terms = loss_terms(run, chunk)
            values = torch.stack([value.float() for value in terms.values()])  # one vector
            values.sum().mul(weight).backward()  # one backward over the summed loss
        for copies in run.bf16_linears.values():
            copies.fold_gradients()
        summed = values.detach() * weight
        batch = summed if batch is None else batch + summed
        if statistics is not None:
            for name, value in run.objective.statistics().items():
                statistics[name] = statistics.get(name, 0.0) + value * weight
    return dict(zip(terms, batch.unbind()))


def make_groups(run: TrainingRun) -> list[TrainableGroup]:
    """The model's optimiser group, and the objective's (LAD's gates) when it has parameters."""
    args = run.args
    groups = [TrainableGroup("model", run.model, OptimizerSettings.from_args(args))]
    if any(p.requires_grad for p in run.objective.parameters()):
        groups.append(TrainableGroup("gate", run.objective, OptimizerSettings.from_args(args, "gate_"),
                                     run.objective.clip_units()))
    return groups


def training_step(run: TrainingRun, groups: list, rows: torch.Tensor, accum_step: int,
                  statistics: dict | None = None) -> dict:
    """One optimiser step on the batch `rows`: gradients, clipping, update, schedule."""
    for copies in run.bf16_linears.values():
        copies.refresh()  # the bf16 weight copies take the last update
    terms = accumulate_gradients(run, rows, accum_step, statistics)
    distributed.average_gradients(run.objective.parameters())  # LAD's gates, under torchrun
    for group in groups:
        group.step()
    return terms


def rng_state(run: "TrainingRun") -> dict:
    """Random states: the CPU's, Python's, NumPy's, and the CUDA generator of each role's
    device (student, teacher, gates), keyed by role, not by CUDA index, so a resume on
    other device ids (or fewer GPUs) restores each where that role now runs."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state(), "cuda_by_role": {}}
    for role, device in run.roles().items():
        if device.type == "cuda":
            state["cuda_by_role"][role] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(run: "TrainingRun", state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    saved = state.get("cuda_by_role", {})
    if "cuda" in state:  # written before states were kept by role: one per CUDA index
        saved = {role: state["cuda"][device.index] for role, device in run.roles().items()
                 if device.type == "cuda" and device.index < len(state["cuda"])}
    moved = []
    for role, device in run.roles().items():
        if device.type == "cuda" and role in saved:
            torch.cuda.set_rng_state(saved[role], device)
        elif (device.type == "cuda") != (role in saved):
            moved.append(role)
    if moved:
        print(f"note: the {', '.join(moved)} now run{'s' if len(moved) == 1 else ''} on another "
              "kind of device than before (CPU/GPU); training continues correctly, but its "
              "random numbers (dropout) differ from those of an uninterrupted run")


class NonFiniteGuard:
    """Remembers, on the device and without synchronising, the first step at which each
    loss term, or each group's gradient, was not finite; `check` reads it (at log and
    checkpoint steps only). A NaN gradient with a finite loss matters as much: clipping
    spreads it into every weight. All values are checked together, as one vector: a
    handful of small ops per step, whatever the number of terms."""

    def __init__(self):
        self.keys, self.first_bad = [], None

    def update(self, terms: dict, groups: list, step: int) -> None:
        """The step's loss terms and each group's gradient norm (on the device; the
        messages are only worded in `check`). Loss terms first: they name a NaN first."""
        keys = [("loss", name) for name in terms] + [("gradient", group.name) for group in groups]
        if keys != self.keys:  # the first step (the terms never change within a run)
            self.keys = keys
            self.first_bad = torch.full((len(keys),), -1, device=groups[0].params[0].device)
        device = self.first_bad.device
        values = torch.stack([value.to(device) for value in terms.values()]
                             + [group.grad_norm.to(device) for group in groups])
        bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self, experiment: Experiment) -> None:
        """Raises if anything was not finite; under torchrun the ranks agree first (the
        earliest step over all of them), so all stop together with the same message."""
        if self.first_bad is None:
            return
        if distributed.active():
            never = torch.iinfo(self.first_bad.dtype).max
            steps = distributed.min_over_ranks(torch.where(self.first_bad < 0, never, self.first_bad))
            self.first_bad = torch.where(steps == never, -1, steps)
        bad = {key: step for key, step in zip(self.keys, self.first_bad.tolist()) if step >= 0}
        if bad:
            (kind, name), step = min(bad.items(), key=lambda item: item[1])  # the first
            what = (f"loss term '{name}' is not finite" if kind == "loss"
                    else f"the {name}'s gradient is not finite (the loss was)")
            steps = experiment.checkpoint_steps()
            last = f"model-{steps[-1]}.pt is the last good checkpoint" if steps else "no checkpoint was saved"
            raise SharedError(f"step {step}: {what}; the run stopped without "
                            f"saving ({last}); try a lower --lr or --mu in a new --experiment")


def restore(run: TrainingRun, groups: list, order: BatchOrder) -> int:
    """Continue from the experiment's last training state; returns its step."""
    experiment = run.experiment
    state = experiment.load_train_state()
    if state is None:
        print(f"{experiment.path} has no training state yet: starting from step 0")
        return 0
    step = state["step"]
    run.model.load_state_dict(experiment.load_checkpoint(step))
    if len(groups) > 1:
        run.objective.load_state_dict(experiment.load_checkpoint(step, kind="gate"))
    for group in groups:
        group.load_state_dict({"optimizer": state["optimizers"][group.name],
                               "scheduler": state["schedulers"][group.name]})
    order.load_state_dict(state["order"])
    set_rng_state(run, state.get("rng_by_rank", [state["rng"]])[distributed.rank()])
    print(f"resuming {experiment.name} from step {step}")
    return step


def save_weights(run: TrainingRun, groups: list, step: int) -> None:
    """model-<step>.pt (and gate-<step>.pt), each written atomically (under torchrun by
    rank 0 alone: `train` calls it through distributed.agreed)."""
    run.experiment.save_checkpoint(run.model.state_dict(), step)
    if len(groups) > 1:
        run.experiment.save_checkpoint(run.objective.state_dict(), step, kind="gate")


def save_train_state(run: TrainingRun, groups: list, order: BatchOrder, step: int) -> None:
    """The state a resume needs, written after the step's weights: a kill before it leaves
    the previous training state, which points at checkpoints that are all complete.
    Under torchrun it holds every rank's random states (rank 0 writes it)."""
    rngs = distributed.gather_objects(rng_state(run))
    distributed.agreed(lambda: _write_train_state(run, groups, order, step, rngs), main_only=True)


def _write_train_state(run: TrainingRun, groups: list, order: BatchOrder, step: int, rngs: list) -> None:
    experiment = run.experiment
    states = [group.state_dict() for group in groups]
    experiment.save_train_state({
        "step": step,
        "optimizers": {g.name: s["optimizer"] for g, s in zip(groups, states)},
        "schedulers": {g.name: s["scheduler"] for g, s in zip(groups, states)},
        "order": order.state_dict(),
        "rng": rngs[0],
        **({"rng_by_rank": rngs} if len(rngs) > 1 else {}),
    })


def evaluate_checkpoint(run: TrainingRun, step: int, log: "TrainingLog") -> None:
    """--eval_during_training: score the model just saved as model-<step>.pt on each split,
    merged into the experiment's results store (rows, per-example predictions, tensorboard
    points) as run_fine_tune_eval.py --ckpt does. Evaluation draws no random numbers, so
    training continues exactly as without it."""
    from fine_tune.evaluation import record_results, score, scores_text
    task = get_task(run.args.task)
    for split, data in run.eval_data.items():
        # (under torchrun every rank predicts its share of the batches; rank 0 writes)
        row, predicted = score(run.model, task, data, run.args.eval_batch_size, run.device,
                               amp=run.amp, desc=f"{split} model-{step}")
        distributed.agreed(lambda: record_results(  # rank 0 writes; all hear of a failure
            run.experiment, task, split, data, [({"step": step} | row, predicted)]), main_only=True)
        if distributed.is_main():
            log.note(f"{run.experiment.name} {split} model-{step}.pt: {scores_text(task, row)}")
    run.model.train()
    log.restart_clock()  # examples/s measures training alone


def prune_checkpoints(run: TrainingRun, step: int) -> None:
    """--keep_checkpoints N: delete all checkpoints up to `step` but the N most recent and
    the best one (fine_tune.results.best_checkpoint: read from the store, so scores of
    earlier runs and of run_fine_tune_eval.py count too, whatever this run's flags). Runs
    after the training state points at model-<step>.pt, which is always among the most
    recent. The store's rows of deleted checkpoints are kept and marked 'pruned'."""
    keep_count = getattr(run.args, "keep_checkpoints", None)
    if keep_count is None:  # (called on rank 0 alone under torchrun)
        return
    from fine_tune.results import best_checkpoint, mark_checkpoints
    experiment = run.experiment
    steps = [s for s in experiment.checkpoint_steps() if s <= step]
    keep = set(steps[-keep_count:])
    best = best_checkpoint(experiment.path, get_task(run.args.task))
    if best is not None:
        keep.add(best.step)
    pruned = [old for old in steps if old not in keep]
    for old in pruned:  # the model first: a listed checkpoint always has its gates
        for kind in ("model", "gate"):
            experiment.checkpoint_path(old, kind).unlink(missing_ok=True)
    if pruned:
        mark_checkpoints(experiment.path)


class TrainingLog:
    """Loss terms, learning rates, gradient norms and the objective's statistics (LAD's
    gate values) every --log_step: to tensorboard (log/, opened at the first point, so a
    run that logs nothing leaves no empty event file; points a killed run logged after
    `start` are dropped), to train_log.csv (one row per --log_step, the same tags as
    columns; rows past `start` dropped alike), and to the terminal: a live tqdm bar, or,
    when stderr is not a terminal (nohup, slurm, `> log 2>&1`), one plain line per
    --log_step."""

    def __init__(self, experiment: Experiment, start: int, total_step: int):
        self.experiment, self.start, self.total_step = experiment, start, total_step
        self.writer = None
        self.csv_columns = None
        self.interactive = interactive()
        # Updated by hand: a bar that wraps the loop redraws a stale count when only
        # the postfix changes.
        self.bar = progress(initial=start, total=total_step, desc=experiment.name, unit="step")
        self.clock, self.examples = time.perf_counter(), 0

    def step(self, examples: int) -> None:
        self.bar.update()
        self.examples += examples

    def restart_clock(self) -> None:
        self.clock, self.examples = time.perf_counter(), 0

    def note(self, text: str) -> None:
        """A line for the terminal or the log file, without breaking the bar."""
        if self.interactive:
            self.bar.write(text, file=sys.stderr)
        else:
            log_line(text)

    def write(self, step: int, means: dict, groups: list, statistics: dict | None = None) -> None:
        """(Under torchrun rank 0 alone writes: `train` calls it through distributed.agreed.)"""
        if self.writer is None:
            self.writer = SummaryWriter(self.experiment.path / "log", purge_step=self.start + 1)
        total = sum(means.values())
        now = time.perf_counter()
        speed = self.examples / max(now - self.clock, 1e-9)
        self.restart_clock()
        row = {f"loss/{name}": value for name, value in means.items()} | {"loss/total": total}
        for group in groups:
            row[f"lr/{group.name}"] = group.lr()
            row[f"grad_norm/{group.name}"] = float(group.grad_norm)
        row |= statistics or {}
        for tag, value in row.items():
            self.writer.add_scalar(tag, value, step)
        self._append_csv({"step": step} | row | {"examples_per_s": speed})
        if self.interactive:
            self.bar.set_postfix(loss=f"{total:.4f}", lr=f"{groups[0].lr():.2e}")
        else:
            terms = "  ".join(f"{name} {value:.4f}" for name, value in means.items())
            lrs = "  ".join(f"lr/{group.name} {group.lr():.2e}" for group in groups)
            log_line(f"{self.experiment.name} step {step}/{self.total_step}  loss {total:.4f}  "
                     f"{terms}  {lrs}  {speed:.1f} examples/s")

    def _append_csv(self, row: dict) -> None:
        path = self.experiment.path / TRAIN_LOG
        try:
            if self.csv_columns is None:  # the first row of this run
                self._start_csv(path, list(row))
            with open(path, "a", newline="") as file:
                csv.DictWriter(file, self.csv_columns, restval="").writerow(row)
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror or error}): free disk space or "
                            f"fix the permissions of {self.experiment.path}") from None

    def _start_csv(self, path, columns: list) -> None:
        """Keep the complete rows up to `start` (a killed run may have logged past its last
        checkpoint, or died mid-line) and rewrite the file with them, atomically."""
        header, kept = None, []
        if path.is_file():
            with open(path, newline="") as file:
                reader = csv.reader(file)
                header = next(reader, None)
                kept = [line for line in reader if header and len(line) == len(header)
                        and line[0].isdigit() and int(line[0]) <= self.start]
        self.csv_columns = (header + [c for c in columns if c not in header]) if kept else columns
        lines = [self.csv_columns] + [line + [""] * (len(self.csv_columns) - len(line)) for line in kept]
        text = io.StringIO()
        csv.writer(text).writerows(lines)
        self.experiment.write_text(TRAIN_LOG, text.getvalue())

    def close(self) -> None:
        self.bar.close()  # before any error message, which would otherwise be glued to it
        if self.writer is not None:
            self.writer.close()


def train(run: TrainingRun) -> None:
    args, experiment = run.args, run.experiment
    groups = make_groups(run)
    order = BatchOrder(len(run.data), args.batch_size, args.seed)
    # (under torchrun every rank reads the state; a damaged file stops all with one line)
    start = distributed.agreed(lambda: restore(run, groups, order)) if getattr(args, "resume", False) else 0
    if start == 0 and distributed.rank() > 0:
        torch.manual_seed(args.seed + 1_000_003 * distributed.rank())  # each rank its own dropout
    run.model.train()
    run.objective.train()
    if run.teacher is not None:
        run.teacher.eval()

    total_step = args.total_step
    # Loss terms since the last log, summed on the device, and each step's statistics,
    # kept on the device (a few numbers a step): no host synchronisation inside a step.
    # (Each a few vector ops per step, whatever the number of terms.)
    sums, steps_statistics, summed_steps = None, [], 0
    guard = NonFiniteGuard()
    log = TrainingLog(experiment, start, total_step)
    step = start
    try:
        for step in range(start + 1, total_step + 1):
            rows = order.next_batch()
            statistics = {}
            terms = training_step(run, groups, rows, args.accum_step, statistics)
            steps_statistics.append(statistics)
            log.step(len(rows))
            guard.update(terms, groups, step)
            values = torch.stack(list(terms.values()))
            sums = values if sums is None else sums + values
            summed_steps += 1

            last = step == total_step
            if step % args.log_step == 0 or last:
                # Host synchronisation happens only here and at checkpoints.
                guard.check(experiment)
                # Each statistic as one tensor of the interval's steps (under torchrun:
                # averaged over the ranks with the losses in one all-reduce, so each row
                # is the step's value over the global batch).
                per_step = {tag: torch.stack([s[tag] for s in steps_statistics])
                            for tag in steps_statistics[0]}
                averaged = distributed.mean_over_ranks({"terms": sums} | per_step)
                means = dict(zip(terms, (averaged.pop("terms") / summed_steps).tolist()))
                watched = run.objective.name_statistics(
                    {tag: value.tolist()
                     for tag, value in run.objective.interval_statistics(averaged).items()})
                sums, steps_statistics, summed_steps = None, [], 0
                distributed.agreed(lambda: log.write(step, means, groups, watched), main_only=True)
            if step % args.ckpt_step == 0 or last:
                guard.check(experiment)  # never save a diverged model
                # Rank 0 writes; under torchrun the others wait for its verdict (a full disk
                # stops them all with its one line).
                distributed.agreed(lambda: save_weights(run, groups, step), main_only=True)
                if run.eval_data:
                    evaluate_checkpoint(run, step, log)
                save_train_state(run, groups, order, step)  # only now does --resume reach `step`
                distributed.agreed(lambda: prune_checkpoints(run, step), main_only=True)
    except KeyboardInterrupt:
        steps = experiment.checkpoint_steps()
        stopped = f"training of {experiment.name} stopped at step {step} of {total_step}"
        if steps:
            raise Interrupted(f"{stopped}; to continue from step {steps[-1]} (its last checkpoint), "
                              "run the same command with --resume") from None
        raise Interrupted(f"{stopped}, before its first checkpoint; the same command with "
                          "--resume starts again from step 0") from None
    finally:
        log.close()
    distributed.barrier()  # every rank ends after rank 0's last save
    steps = experiment.checkpoint_steps()
    print(f"done: checkpoint{'s' * (len(steps) > 1)} at step{'s' * (len(steps) > 1)} "
          f"{', '.join(map(str, steps))} in {experiment.path}")

