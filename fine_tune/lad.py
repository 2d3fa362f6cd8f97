"""LAD, LAD-NO and partial LAD: students matched to gated aggregates of teacher layers.

Definitions follow the authors' released code (IKMLab/LAD and the `contrast` branch of
ProFatXuanAll/BERT-gang); README.md lists where it differs from the paper's text.
Layer numbers are 1-based: H_i is teacher layer i, S_j student layer j, k = L // n.
"""
import torch
from torch import nn

from fine_tune.distillation import DistillationObjective, distil, layer_stride, mse_terms
from fine_tune.errors import UserError
from fine_tune.modeling import move, resolve_device


class HighwayGate(nn.Module):
    """Gate_i(A_prev, H) = LayerNorm(z * H + (1 - z) * A_prev), z = sigmoid(W A_prev + b).

    The LayerNorm normalises each example jointly over the sequence and hidden dimensions
    (normalized_shape = [max_seq_len, d]), so inputs must be padded to max_seq_len."""

    def __init__(self, d_model: int, max_seq_len: int):
        super().__init__()
        self.linear = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.linear.weight)  # the bias keeps nn.Linear's default init
        self.norm = nn.LayerNorm([max_seq_len, d_model])

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.linear(previous))
        return self.norm(z * current + (1 - z) * previous)


# ---- which teacher states each student layer is matched to -------------------------
# A target is ("A", i): the chained aggregate A_i; ("gate", i-1, i): a lone gate over
# (H_{i-1}, H_i); or ("H", i): the raw teacher layer.

def lad_targets(teacher_layers: int, student_layers: int) -> list[tuple]:
    k = layer_stride(teacher_layers, student_layers)
    return [("A", j * k) for j in range(1, student_layers + 1)]


def lad_no_targets(teacher_layers: int, student_layers: int) -> list[tuple]:
    k = layer_stride(teacher_layers, student_layers)
    if k < 2:
        raise UserError(f"LAD-NO gates H_(jk-1) with H_jk, which needs a teacher at least twice as "
                        f"deep as the student; got {teacher_layers} and {student_layers} layers")
    return [("gate", j * k - 1, j * k) for j in range(1, student_layers + 1)]


def check_partial_indices(gate_indices, student_indices, teacher_layers, student_layers) -> None:
    for flag, values, limit, whose in (("--gate_indices", gate_indices, teacher_layers, "teacher"),
                                       ("--student_indices", student_indices, student_layers, "student")):
        if any(not 1 <= v <= limit for v in values):
            raise UserError(f"{flag} {','.join(map(str, values))}: layer numbers run from 1 to "
                            f"{limit} for this {whose}")
        if len(set(values)) != len(values):
            raise UserError(f"{flag} {','.join(map(str, values))} repeats a layer")
        if values != sorted(values):
            raise UserError(f"{flag} {','.join(map(str, values))} must be in increasing order")
    if len(gate_indices) > len(student_indices):
        raise UserError(f"--gate_indices has {len(gate_indices)} layers but --student_indices only "
                        f"{len(student_indices)}: each gated target needs a student layer")


def partial_lad_targets(teacher_layers, student_layers, gate_indices, student_indices) -> list[tuple]:
    """The first len(gate_indices) entries of student_indices are matched to A at the paired
    gate index; every other student layer j to the raw teacher layer H_{j*k}."""
    check_partial_indices(gate_indices, student_indices, teacher_layers, student_layers)
    k = layer_stride(teacher_layers, student_layers)
    gated = dict(zip(student_indices, gate_indices))
    return [("A", gated[j]) if j in gated else ("H", j * k) for j in range(1, student_layers + 1)]


class GatedObjective(DistillationObjective):
    """The hidden loss of LAD, LAD-NO and partial LAD: (mu / n) * MSE(S_j, target_j), with
    targets built by highway gates on `gate_device`. The gates learn only through this
    loss; the teacher's states carry no gradient."""

    def __init__(self, args, targets: list[tuple], device, gate_device, d_model, max_seq_len):
        super().__init__(args, device)
        self.targets, self.mu, self.gate_device = targets, args.mu, gate_device
        # Chained gates for A_2 .. A_m (A_1 = H_1 needs none), or one gate per lone target.
        self.chain_length = max((t[1] for t in targets if t[0] == "A"), default=0)
        lone = [t for t in targets if t[0] == "gate"]
        count = max(self.chain_length - 1, 0) + len(lone)
        self.gates = nn.ModuleList(HighwayGate(d_model, max_seq_len) for _ in range(count))
        self.to(gate_device)

    def hidden_terms(self, student_hidden, teacher_hidden):
        hidden = [move(h, self.gate_device) for h in teacher_hidden]
        aggregates = [hidden[0]]  # A_1 = H_1
        for i in range(1, self.chain_length):
            aggregates.append(self.gates[i - 1](aggregates[-1], hidden[i]))
        lone_gates = iter(self.gates[max(self.chain_length - 1, 0):])
        targets = []
        for target in self.targets:
            if target[0] == "A":
                targets.append(aggregates[target[1] - 1])
            elif target[0] == "gate":
                targets.append(next(lone_gates)(hidden[target[1] - 1], hidden[target[2] - 1]))
            else:
                targets.append(hidden[target[1] - 1])
        return mse_terms(student_hidden, targets, self.mu, self.device)

    def clip_units(self):
        """The authors clip each gate's gradient norm on its own."""
        return [list(gate.parameters()) for gate in self.gates]

    def describe(self) -> dict:
        return {"gate": "highway: LayerNorm_[max_seq_len, d](z*H + (1-z)*A_prev), z = sigmoid(W A_prev + b)",
                "num_gates": len(self.gates), "chained_up_to_teacher_layer": self.chain_length,
                "student_targets": {f"S_{j + 1}": _describe(t) for j, t in enumerate(self.targets)},
                "d_model": self.gates[0].linear.in_features if len(self.gates) else None,
                "max_seq_len": self.gates[0].norm.normalized_shape[0] if len(self.gates) else None}


def _describe(target) -> str:
    if target[0] == "A":
        return f"A_{target[1]}"
    if target[0] == "gate":
        return f"Gate(H_{target[1]}, H_{target[2]})"
    return f"H_{target[1]}"


def _distil_gated(args, make_targets, init_pairs=None) -> None:
    def make_objective(args, teacher_layers, device):
        gate_device = resolve_device(args.gate_device_id, "--gate_device_id")
        return GatedObjective(args, make_targets(args, teacher_layers), device, gate_device,
                              args.d_model, args.max_seq_len)
    distil(args, make_objective, init_pairs=init_pairs, gate_config=GatedObjective.describe)


def distil_lad(args) -> None:
    _distil_gated(args, lambda args, L: lad_targets(L, args.num_hidden_layers))


def distil_lad_no(args) -> None:
    _distil_gated(args, lambda args, L: lad_no_targets(L, args.num_hidden_layers))


def distil_partial_lad(args) -> None:
    def targets(args, teacher_layers):
        return partial_lad_targets(teacher_layers, args.num_hidden_layers, args.gate_indices,
                                   args.student_indices)

    def init_pairs(args, teacher_layers):
        # As in the authors' code: student_indices[i] starts from pre-trained layer
        # gate_indices[i]; student layers beyond the gated ones keep a random init.
        check_partial_indices(args.gate_indices, args.student_indices, teacher_layers,
                              args.num_hidden_layers)
        return list(zip(args.student_indices, args.gate_indices))
    _distil_gated(args, targets, init_pairs)
