"""LAD, LAD-NO and partial LAD: students matched to gated aggregates of teacher layers.

Definitions follow the authors' released code (IKMLab/LAD and the `contrast` branch of
ProFatXuanAll/BERT-gang); docs/methods.md lists where it differs from the paper's text.
Layer numbers are 1-based: H_i is teacher layer i, S_j student layer j, k = L // n.
"""
import torch
from torch import nn

from fine_tune.distillation import DistillationObjective, distil, layer_stride, mse_terms
from fine_tune.errors import UserError
from fine_tune.modeling import move


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
        # How much of the new layer the gate lets in, and how unevenly: z's mean and
        # (population) variance over batch, tokens (padding included, as the gate sees
        # it) and width, in one fp32 reduction (var_mean: one pass, no cancellation),
        # left on the device for the training log. A mean near 0.5 with a small std is a
        # gate that mixes evenly; with a large one, a gate that passes some units and
        # tokens and blocks others.
        self.var_z, self.mean_z = torch.var_mean(z.detach().float(), correction=0)
        # z * H + (1 - z) * A_prev, as A_prev + z * (H - A_prev): two ops instead of four.
        return self.norm(torch.addcmul(previous, z, current - previous))


class UniformGate(nn.Module):
    """--gate_mode uniform: the gate with the learning taken out, z = 1/2 everywhere and no
    parameters: LayerNorm_[max_seq_len, d](H/2 + A_prev/2), without an affine (a
    HighwayGate's LayerNorm starts as the identity affine)."""

    def __init__(self, d_model: int, max_seq_len: int):
        super().__init__()
        self.shape = (max_seq_len, d_model)

    def forward(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        # (the same statistics as HighwayGate's, constant: mean 1/2, no spread)
        self.mean_z = torch.full((), 0.5, device=current.device)
        self.var_z = torch.zeros((), device=current.device)
        return nn.functional.layer_norm(torch.lerp(previous, current, 0.5), self.shape)


GATE_MODES = {"learned": HighwayGate, "frozen": HighwayGate, "uniform": UniformGate}


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


def partial_index_problems(gate_indices, student_indices, teacher_layers, student_layers) -> list[str]:
    """What is wrong with partial LAD's indices for this teacher and student (empty: fine)."""
    problems = []
    for flag, values, limit, whose in (("--gate_indices", gate_indices, teacher_layers, "teacher"),
                                       ("--student_indices", student_indices, student_layers, "student")):
        text = ",".join(map(str, values))
        if any(not 1 <= v <= limit for v in values):
            problems.append(f"{flag} {text}: layer numbers run from 1 to {limit} for this {whose}")
        elif len(set(values)) != len(values):
            problems.append(f"{flag} {text} repeats a layer")
        elif values != sorted(values):
            problems.append(f"{flag} {text} must be in increasing order")
    if len(gate_indices) > len(student_indices):
        problems.append(f"--gate_indices has {len(gate_indices)} layers but --student_indices only "
                        f"{len(student_indices)}: each gated target needs a student layer")
    return problems


def check_partial_indices(gate_indices, student_indices, teacher_layers, student_layers) -> None:
    problems = partial_index_problems(gate_indices, student_indices, teacher_layers, student_layers)
    if problems:
        raise UserError("; ".join(problems))


def partial_index_misfits(args, teacher_layers: int, student_layers: int) -> list[tuple]:
    """For distillation.student_misfits: when the indices do not fit a student of
    `student_layers` layers, the seed's pattern scaled to it: gates at k, 2k, .., (n-1)k
    (at k for a one-layer student) and student layers 1..n."""
    problems = partial_index_problems(args.gate_indices, args.student_indices, teacher_layers,
                                      student_layers)
    if not problems:
        return []
    k = teacher_layers // student_layers
    gates = ",".join(str(j * k) for j in range(1, max(student_layers, 2)))
    students = ",".join(str(j) for j in range(1, student_layers + 1))
    return [("--gate_indices", "; ".join(problems), gates), ("--student_indices", "", students)]


def partial_lad_targets(teacher_layers, student_layers, gate_indices, student_indices) -> list:
    """As the authors' code: the first len(gate_indices) entries of student_indices learn A
    at the paired gate index; the other student layers, in order, learn the raw teacher
    layers max(gate)+k, max(gate)+2k, .. up to L, and those left over learn no hidden state
    (None). With the seed's 2,4,6,8,10 this is S_6 -> H_12; with 3,6 (12 -> 6 layers):
    S_3..S_5 -> H_8, H_10, H_12, S_6 unmatched."""
    check_partial_indices(gate_indices, student_indices, teacher_layers, student_layers)
    k = layer_stride(teacher_layers, student_layers)
    gated = dict(zip(student_indices, gate_indices))
    raw = iter(range(max(gate_indices) + k, teacher_layers + 1, k))
    return [("A", gated[j]) if j in gated else ("H", next(raw, None))
            for j in range(1, student_layers + 1)]


class GatedObjective(DistillationObjective):
    """The hidden loss of LAD, LAD-NO and partial LAD: (mu / n) * MSE(S_j, target_j), with
    targets built by highway gates on `gate_device`. The gates learn only through this
    loss; the teacher's states carry no gradient. A target ("H", None) leaves its student
    layer without a hidden term (partial LAD's layers past the teacher's last)."""

    def __init__(self, args, targets: list[tuple], device, gate_device, d_model, max_seq_len):
        super().__init__(args, device)
        self.targets, self.mu, self.gate_device = targets, args.mu, gate_device
        # --gate_mode: learned (the authors'), frozen (seeded initial weights, never
        # trained: no gate optimiser, no gate-<step>.pt) or uniform (z = 1/2, no parameters)
        self.gate_mode = getattr(args, "gate_mode", "learned")
        self.d_model, self.max_seq_len = d_model, max_seq_len
        # Chained gates for A_2 .. A_m (A_1 = H_1 needs none), or one gate per lone target.
        self.chain_length = max((t[1] for t in targets if t[0] == "A"), default=0)
        lone = [t for t in targets if t[0] == "gate"]
        count = max(self.chain_length - 1, 0) + len(lone)
        gate = GATE_MODES[self.gate_mode]
        self.gates = nn.ModuleList(gate(d_model, max_seq_len) for _ in range(count))
        if self.gate_mode == "frozen":
            self.gates.requires_grad_(False)
        # Each gate is named by the teacher layer H_i its z weighs (against A_(i-1), or
        # against H_(i-1) for a lone gate).
        self.gate_names = ([f"H_{i}" for i in range(2, self.chain_length + 1)]
                           + [f"H_{t[2]}" for t in lone])
        # The teacher layers (1-based) the targets read: only those are moved to the gates'
        # device.
        self.needed = set(range(1, self.chain_length + 1))
        for target in targets:
            self.needed |= {i for i in target[1:] if i is not None}
        self.to(gate_device)

    def hidden_terms(self, student_hidden, teacher_hidden):
        hidden = [move(h, self.gate_device) if i in self.needed else None
                  for i, h in enumerate(teacher_hidden, start=1)]
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
                targets.append(None if target[1] is None else hidden[target[1] - 1])
        return mse_terms(student_hidden, targets, self.mu, self.device)

    def clip_units(self):
        """The authors clip each gate's gradient norm on its own."""
        return [list(gate.parameters()) for gate in self.gates]

    def statistics(self) -> dict:
        """Every gate's mean z in the last forward (over batch, tokens and width) and the
        mean of (z - 1/2)^2, its variance plus (mean - 1/2)^2, as two fp32 vectors. Both
        are means over the forward's rows, so the trainer's averages over micro-batches
        and ranks give the step's values over its whole batch, from which
        `interval_statistics` takes the step's variance (centred on 1/2, the sigmoid's
        middle, so that a mean near 0.5 leaves no cancellation in fp32)."""
        if not len(self.gates) or not hasattr(self.gates[0], "mean_z"):
            return {}
        mean = torch.stack([gate.mean_z for gate in self.gates])
        centred = mean - 0.5
        return {"gate_z": mean,
                "gate_z_square": torch.addcmul(torch.stack([gate.var_z for gate in self.gates]),
                                               centred, centred)}

    def interval_statistics(self, steps: dict) -> dict:
        """gate_z: each gate's mean z over the interval's steps; gate_z_std: the standard
        deviation of z within each step (over its whole batch, tokens and width: the same
        under --accum_step and torchrun as in one forward), averaged over the steps. Not
        the std over the whole interval, which would add the drift of the mean from step
        to step."""
        if "gate_z" not in steps:
            return {}
        mean, square = steps["gate_z"], steps["gate_z_square"]
        variance = (square - (mean - 0.5) ** 2).clamp(min=0)  # (steps, gates)
        return {"gate_z": mean.mean(0), "gate_z_std": variance.sqrt().mean(0)}

    def name_statistics(self, values: dict) -> dict:
        """gate_z/H_i and gate_z_std/H_i for each gate, each mean beside its std."""
        named = {}
        for i, name in enumerate(self.gate_names):
            for tag in ("gate_z", "gate_z_std"):
                if tag in values:
                    named[f"{tag}/{name}"] = values[tag][i]
        return named

    def describe(self) -> dict:
        gate = ("uniform: LayerNorm_[max_seq_len, d](H/2 + A_prev/2), no parameters"
                if self.gate_mode == "uniform" else
                "highway: LayerNorm_[max_seq_len, d](z*H + (1-z)*A_prev), z = sigmoid(W A_prev + b)"
                + (", frozen at its seeded initial weights" if self.gate_mode == "frozen" else ""))
        return {"gate": gate, "gate_mode": self.gate_mode,
                "num_gates": len(self.gates), "chained_up_to_teacher_layer": self.chain_length,
                "gates_by_teacher_layer": self.gate_names,
                "student_targets": {f"S_{j + 1}": _describe(t) for j, t in enumerate(self.targets)},
                "d_model": self.d_model if len(self.gates) else None,
                "max_seq_len": self.max_seq_len if len(self.gates) else None}


def _describe(target) -> str:
    if target[0] == "A":
        return f"A_{target[1]}"
    if target[0] == "gate":
        return f"Gate(H_{target[1]}, H_{target[2]})"
    return "none (no hidden loss)" if target[1] is None else f"H_{target[1]}"


def _distil_gated(args, method: str, make_targets, **options) -> None:
    def make_objective(args, teacher, device, gate_device):
        return GatedObjective(args, make_targets(args, teacher.num_hidden_layers), device, gate_device,
                              args.d_model, args.max_seq_len)
    mode = getattr(args, "gate_mode", "learned")
    method += "" if mode == "learned" else f" ({mode} gates)"
    distil(args, make_objective, method, gate_config=GatedObjective.describe, **options)


def distil_lad(args) -> None:
    _distil_gated(args, "LAD", lambda args, L: lad_targets(L, args.num_hidden_layers))


def distil_lad_no(args) -> None:
    _distil_gated(args, "LAD-NO", lambda args, L: lad_no_targets(L, args.num_hidden_layers),
                  depths=lambda L: range(1, L // 2 + 1))  # k >= 2: each gate joins two layers


def distil_partial_lad(args) -> None:
    def targets(args, teacher_layers):
        return partial_lad_targets(teacher_layers, args.num_hidden_layers, args.gate_indices,
                                   args.student_indices)

    def init_pairs(args, teacher_layers):
        # As in the authors' code: student_indices[i] starts from pre-trained layer
        # gate_indices[i]; the other student layers keep a random init.
        check_partial_indices(args.gate_indices, args.student_indices, teacher_layers,
                              args.num_hidden_layers)
        return list(zip(args.student_indices, args.gate_indices))
    _distil_gated(args, "partial LAD", targets, init_pairs=init_pairs,
                  method_misfits=partial_index_misfits)
