"""MiniLM-style self-attention relation distillation (MiniLMv2: Wang et al., Findings of
ACL 2021, section 3), applied to task-specific distillation with the logit loss.

For each of the queries, keys and values X in {Q, K, V}, of teacher layer
--minilm_teacher_layer (default the last) and of the student's last layer: the vectors of
all attention heads, concatenated, are split into r relation heads (--relation_heads,
default the teacher's number of attention heads) of width d_r = width / r, and each head a
gives the relation R_a = softmax(X_a X_a^T / sqrt(d_r)) over the sequence (equations 1-3).
The terms (logged as relation_qq, relation_kk, relation_vv) are

    mu * 1 / (r |x|) * sum_a sum_t KL(R^T_a,t || R^S_a,t)     (their equation 4)

plus the soft and hard logit terms of every method (fine_tune.distillation). As relations
are |x| x |x| matrices, the student's width and heads may differ from the teacher's: only r
must divide both widths.

Padding (the paper is silent; our choice): a padded key gets no weight in any relation
(it is masked out of the softmax), and the sum over t runs over each example's real tokens
only, |x| being their number; the loss is the mean of that over the batch. So the loss
does not depend on padding. mu (--mu) weights the three terms (default 1: their sum,
as in the paper).
"""
import torch

from fine_tune.attention import AttentionCapture, PROJECTIONS
from fine_tune.distillation import DistillationObjective, distil
from fine_tune.errors import UserError
from fine_tune.modeling import move


def relation_kl(teacher: torch.Tensor, student: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """1 / (r |x|) sum_a sum_t KL(R^T_a,t || R^S_a,t), averaged over the batch, from
    relation-head vectors [batch, r, length, d_r] of each model (fp32) and the key mask
    [batch, length] (True: a real token)."""
    def log_relation(x):
        # fp32 even under --amp bf16: autocast would round the scores to bf16, and the
        # two models' rounded relations can give a (slightly) negative KL
        with torch.autocast(x.device.type, enabled=False):
            scores = x.float() @ x.float().transpose(-1, -2) / x.shape[-1] ** 0.5
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return torch.log_softmax(scores, dim=-1)
    target, log_student = log_relation(teacher), log_relation(student)
    # KL per (example, head, query): sum over keys of p_T (log p_T - log p_S); a masked key
    # has p_T = 0 and adds nothing.
    kl = (target.exp() * (target - log_student)).sum(-1)           # [batch, r, length]
    real = key_mask[:, None, :].to(kl.dtype)
    per_example = (kl * real).sum((1, 2)) / (real.sum(-1).squeeze(1) * kl.shape[1])
    return per_example.mean()


class MiniLMObjective(DistillationObjective):
    needs_hidden_states = False  # the relations come from the attention's projections
    padding_invariant = True  # padded keys masked, real queries only: --dynamic_padding works
    unpad_safe = False  # (--unpad computes the projections on real tokens only)

    def __init__(self, args, teacher_config, device):
        super().__init__(args, device)
        L = teacher_config.num_hidden_layers
        self.teacher_layer = args.minilm_teacher_layer or L
        if not 1 <= self.teacher_layer <= L:
            raise UserError(f"--minilm_teacher_layer {self.teacher_layer}: the teacher's layers "
                            f"run from 1 to {L}")
        self.student_layer = args.num_hidden_layers
        self.relation_heads = args.relation_heads or teacher_config.num_attention_heads
        for width, whose in ((args.d_model, "student's"), (teacher_config.hidden_size, "teacher's")):
            if width % self.relation_heads:
                fitting = [r for r in range(self.relation_heads, 0, -1)
                           if args.d_model % r == 0 and teacher_config.hidden_size % r == 0]
                raise UserError(f"--relation_heads {self.relation_heads} does not divide the "
                                f"{whose} width {width}; use --relation_heads {fitting[0]} (it "
                                f"must divide both {args.d_model} and {teacher_config.hidden_size})")
        self.mu = args.mu
        self.student_attention = self.teacher_attention = None

    def bind(self, model, teacher) -> None:
        self.student_attention = AttentionCapture(model, [self.student_layer])
        self.teacher_attention = AttentionCapture(teacher, [self.teacher_layer])

    def layer_terms(self, student_out, teacher_out) -> dict:
        r, terms = self.relation_heads, {}
        for name in PROJECTIONS:
            student = self.student_attention.heads(self.student_layer, name, r)
            teacher = move(self.teacher_attention.heads(self.teacher_layer, name, r), self.device)
            mask = self.student_attention.mask(student[:, 0])
            terms[f"relation_{name[0]}{name[0]}"] = self.mu * relation_kl(teacher, student, mask)
        self.student_attention.outputs.clear()
        self.teacher_attention.outputs.clear()
        return terms


def distil_minilm(args) -> None:
    distil(args, lambda args, teacher_config, device, _: MiniLMObjective(args, teacher_config, device),
           "MiniLM", same_width=False)
