"""ALP-KD (Passban et al., AAAI 2021), as reimplemented by the LAD authors.

Each student layer j attends over teacher layers with weights
alpha_jm = softmax_m(<S_j, H_m> / sqrt(d)) and learns C_j = sum_m alpha_jm H_m:
  alp-kd            on the [CLS] vector, over all L teacher layers;
  alp-kd-hidden     at every token position, over all L teacher layers;
  alp-kd-hidden-v2  at every position, over teacher layers 1 .. j*k only.
Gradients flow through alpha (it is not detached), as in the authors' code.
"""
import math

import torch

from fine_tune.modeling import move
from fine_tune.distillation import DistillationObjective, distil, layer_stride, mse_terms



def attention_targets(student: torch.Tensor, teachers: torch.Tensor, visible: int | None = None):
    """C = sum_m softmax_m(<student, teacher_m> / sqrt(d)) * teacher_m.

    student: [..., d]; teachers: [L, ..., d]; only the first `visible` teacher layers
    are attended to when given. The softmax subtracts the maximum (torch.softmax), so
    large scores do not overflow in fp16/bf16 as a plain exp would."""
    if visible is not None:
        teachers = teachers[:visible]
    # Scores in fp32: in bf16 nearby large scores round to the same value.
    scores = (teachers.float() * student.float().unsqueeze(0)).sum(-1) / math.sqrt(student.shape[-1])
    alpha = torch.softmax(scores, dim=0).to(teachers.dtype)  # [L, ...]
    return (alpha.unsqueeze(-1) * teachers).sum(0), alpha


class ALPObjective(DistillationObjective):
    def __init__(self, args, teacher_layers: int, device):
        super().__init__(args, device)
        self.variant, self.mu = args.alp_exp, args.mu
        self.k = layer_stride(teacher_layers, args.num_hidden_layers)
        self.padding_invariant = self.variant == "alp-kd"  # [CLS] only

    def hidden_terms(self, student_hidden, teacher_hidden):
        if self.variant == "alp-kd":  # [CLS] only: slice before moving between devices
            students = [s[:, 0] for s in student_hidden]
            teacher_hidden = [h[:, 0] for h in teacher_hidden]
        else:
            students = list(student_hidden)
        # (fp32, as the teacher's states already are under --amp bf16: modeling.bf16_teacher)
        teachers = torch.stack([move(h, self.device) for h in teacher_hidden]).float()
        targets = []
        for j, student in enumerate(students, start=1):
            visible = j * self.k if self.variant == "alp-kd-hidden-v2" else None
            targets.append(attention_targets(student, teachers, visible)[0])
        return mse_terms(students, targets, self.mu, self.device)


def distil_alp(args) -> None:
    distil(args, lambda args, teacher, device, _: ALPObjective(args, teacher.num_hidden_layers, device),
           f"ALP-KD ({args.alp_exp})")
