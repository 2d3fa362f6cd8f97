"""BERT-PKD (Sun et al., EMNLP 2019), two ways.

  mse (default; the LAD authors' reimplementation, "our implementation" in the seed):
      student layer j learns teacher layer j*k, the last layer included:
      (mu / n) * MSE(S_j, H_jk) over the whole sequence, unnormalised.
  pkd-skip (the original PKD-Skip loss, scaled as the PKD authors' code scales it): [CLS]
      vectors of student layers 1 .. n-1 and teacher layers k, 2k, .., (n-1)k (the last
      layer is left to the logit loss), each L2-normalised; mu times the mean over
      batch x layers x hidden of the squared differences (their F.mse_loss over the
      stacked [batch, n-1, d] vectors, weighted by beta = --mu).
"""
from torch.nn import functional as F

from fine_tune.distillation import DistillationObjective, distil, layer_stride, mse_terms
from fine_tune.errors import UserError



def pkd_teacher_layers(teacher_layers: int, student_layers: int, loss: str) -> list[int]:
    """Teacher layer (1-based) matched to student layers 1, 2, ..."""
    k = layer_stride(teacher_layers, student_layers)
    last = student_layers if loss == "mse" else student_layers - 1
    return [j * k for j in range(1, last + 1)]


class PKDObjective(DistillationObjective):
    def __init__(self, args, teacher_layers: int, device):
        super().__init__(args, device)
        self.loss, self.mu = args.pkd_loss, args.mu
        if self.loss == "pkd-skip" and args.num_hidden_layers < 2:
            raise UserError("--pkd_loss pkd-skip matches student layers 1..n-1 (the last is left "
                            "to the logit loss), so it needs --num_hidden_layers 2 or more")
        self.matched = pkd_teacher_layers(teacher_layers, args.num_hidden_layers, self.loss)
        self.padding_invariant = self.loss == "pkd-skip"  # [CLS] only

    def hidden_terms(self, student_hidden, teacher_hidden):
        students = student_hidden[:len(self.matched)]
        targets = [teacher_hidden[i - 1] for i in self.matched]
        if self.loss == "mse":
            return mse_terms(students, targets, self.mu, self.device)
        # Per layer: (mu / (n-1)) * mean over batch and hidden; their sum is mu * the mean
        # over batch x layers x hidden.
        weight = self.mu / len(self.matched)
        return {f"hidden_{j}": weight * normalised_mse(s[:, 0], t[:, 0].to(self.device))
                for j, (s, t) in enumerate(zip(students, targets), start=1)}


def normalised_mse(student, teacher):
    """Mean over batch and hidden of the squared differences of L2-normalised vectors."""
    return F.mse_loss(F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1))


def distil_pkd(args) -> None:
    # pkd-skip leaves the last layer to the logit loss, so it needs two student layers.
    first = 2 if args.pkd_loss == "pkd-skip" else 1
    distil(args, lambda args, teacher_layers, device, _: PKDObjective(args, teacher_layers, device),
           f"BERT-PKD ({args.pkd_loss})", depths=lambda L: range(first, L + 1))
