"""The bf16 path's weight copies (--amp bf16): the trained modules' Linear weights in bf16,
refreshed once per step, their gradients folded back into the fp32 weights. (The frozen
teacher's bf16 weights are fine_tune.modeling.bf16_teacher's; autocast itself is
fine_tune.modeling.autocast.)"""
import torch
from torch import nn


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
