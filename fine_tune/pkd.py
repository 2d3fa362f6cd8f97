"""BERT-PKD (Sun et al., EMNLP 2019), two ways.

  mse (default; the LAD authors' reimplementation, "our implementation" in the seed):
      student layer j learns teacher layer j*k, the last layer included:
      (mu / n) * MSE(S_j, H_jk) over the whole sequence, unnormalised.
  pkd-skip (the original PKD-Skip loss, scaled as the PKD authors' code scales it): [CLS]
      vectors of student layers 1 .. n-1 and teacher layers k, 2k, .., (n-1)k (the last
      layer is left to the logit loss), each L2-normalised; mu times the mean over
      batch x layers x hidden of the squared differences (their F.mse_loss over the
      stacked [batch, n-1, d] vectors, weighted by beta = --mu).

Which teacher layers the student's layers learn (--layer_map):
  uniform (default)  layers k, 2k, .. as above;
  last               only the student's last layer, the teacher's last (the control of Ko et
                     al., Findings of EACL 2023); its term keeps the weight mu / n it has
                     under uniform (mse only: pkd-skip leaves the last layer to the logits);
  random             every epoch, a new sorted random set of distinct teacher layers, as
                     many as uniform matches, drawn from the layers uniform draws from
                     (mse: 1..L, pkd-skip: 1..L-1): RAIL-KD's random layer selection (Haidar
                     et al., Findings of NAACL 2022) with this module's loss (RAIL-KD's own
                     compares pooled, normalised layers). The set is a function of (--seed, epoch), so
                     a resumed run draws the same layers; config.json's seed and the epoch
                     recompute it (`random_layers`).
"""
import torch
from torch.nn import functional as F

from fine_tune.distillation import DistillationObjective, distil, layer_stride, mse_terms
from fine_tune.errors import UserError



def pkd_teacher_layers(teacher_layers: int, student_layers: int, loss: str) -> list[int]:
    """Teacher layer (1-based) matched to student layers 1, 2, ..."""
    k = layer_stride(teacher_layers, student_layers)
    last = student_layers if loss == "mse" else student_layers - 1
    return [j * k for j in range(1, last + 1)]


def random_layers(teacher_layers: int, count: int, loss: str, seed: int, epoch: int) -> list[int]:
    """--layer_map random: `count` distinct teacher layers (1-based, increasing) for
    `epoch`, from 1..L (mse) or 1..L-1 (pkd-skip), by a generator of its own seeded from
    (seed, epoch): the data order and dropout draw nothing less or more for it."""
    pool = teacher_layers if loss == "mse" else teacher_layers - 1
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7_777_777)
    return sorted(int(i) + 1 for i in torch.randperm(pool, generator=generator)[:count])


class PKDObjective(DistillationObjective):
    def __init__(self, args, teacher_layers: int, device):
        super().__init__(args, device)
        self.loss, self.mu = args.pkd_loss, args.mu
        if self.loss == "pkd-skip" and args.num_hidden_layers < 2:
            raise UserError("--pkd_loss pkd-skip matches student layers 1..n-1 (the last is left "
                            "to the logit loss), so it needs --num_hidden_layers 2 or more")
        self.layer_map, self.seed, self.teacher_layers = args.layer_map, args.seed, teacher_layers
        if self.layer_map == "last" and self.loss == "pkd-skip":
            raise UserError("--layer_map last matches only the last layers, which --pkd_loss "
                            "pkd-skip leaves to the logit loss: use --pkd_loss mse")
        self.matched = pkd_teacher_layers(teacher_layers, args.num_hidden_layers, self.loss)
        self.epoch = None
        self.padding_invariant = self.loss == "pkd-skip"  # [CLS] only

    def start_step(self, step: int, epoch: int) -> None:
        if self.layer_map == "random" and epoch != self.epoch:
            self.matched = random_layers(self.teacher_layers, len(self.matched), self.loss,
                                         self.seed, epoch)
            self.epoch = epoch

    def hidden_terms(self, student_hidden, teacher_hidden):
        if self.layer_map == "last":  # S_n -> H_L, weighted mu / n as under uniform
            n = len(student_hidden)
            return mse_terms([student_hidden[-1]], [teacher_hidden[-1]], self.mu, self.device,
                             num_layers=n, first=n)
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
    mapping = "" if args.layer_map == "uniform" else f", {args.layer_map} layers"
    distil(args, lambda args, teacher, device, _: PKDObjective(args, teacher.num_hidden_layers, device),
           f"BERT-PKD ({args.pkd_loss}{mapping})", depths=lambda L: range(first, L + 1))
