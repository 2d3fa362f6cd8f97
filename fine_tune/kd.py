"""Vanilla knowledge distillation (Hinton et al., 2015): the logit terms of every method
(fine_tune.distillation), no layer loss:

    hard_weight * CE(student, gold) + soft_weight * T^2 * KL(teacher/T || student/T)

(STS-B: MSE to the gold score and to the teacher's score). With --soft_weight 0 it is the
labels-only floor: the student is built and initialised as for every method, from the
teacher's data settings and pre-trained model, but the teacher runs no forward pass, and
the report names the method "labels only", without a teacher.
"""
from fine_tune.distillation import DistillationObjective, distil
from fine_tune.errors import UserError


class KDObjective(DistillationObjective):
    needs_hidden_states = False
    padding_invariant = True  # logits only: --dynamic_padding and --unpad are allowed

    def __init__(self, args, device):
        super().__init__(args, device)
        if args.soft_weight == 0 and args.hard_weight == 0:
            raise UserError("--soft_weight 0 and --hard_weight 0 leave KD no loss to train: give "
                            "either a weight above 0 (--soft_weight 0 --hard_weight 1: the "
                            "labels-only floor)")
        self.needs_teacher = args.soft_weight > 0

    def layer_terms(self, student_out, teacher_out) -> dict:
        return {}


def distil_kd(args) -> None:
    distil(args, lambda args, teacher_config, device, _: KDObjective(args, device),
           "KD" if args.soft_weight > 0 else "labels only", same_width=False)
