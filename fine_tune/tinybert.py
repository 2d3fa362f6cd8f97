"""TinyBERT's task-specific distillation (Jiao et al., Findings of EMNLP 2020, sections
3.1-3.2), without its data augmentation.

Layer mapping g(m) = m * k (k = L // n; g(0) = 0, the embeddings), and the terms
(equations 7-10; names as logged):
  embedding    mu * MSE(E^S W, E^T)                      embedding outputs
  hidden_m     mu * MSE(H^S_m W, H^T_g(m))               m = 1 .. n, every position
  attention_m  mu * (1/h) sum_i MSE(A^S_m,i, A^T_g(m),i)  pre-softmax scores Q K^T / sqrt(d_head)
  soft, hard   as every method (fine_tune.distillation): the prediction layer
W is one learnable projection from the student's width to the teacher's, shared by the
embeddings and every layer, as in the authors' code (the paper writes W_e and W_h). By
default (--projection auto) there is none when the widths are equal (identity: the
paper's W only maps the student's space to the teacher's); the authors' code applies one
whatever the widths, which --projection always gives. The attention term compares head i with
head i, so the student needs the teacher's number of heads. Masked positions, as in the
authors' code: a padded key's score gets BERT's -10000 and every score <= -100 is then set
to 0, in the student's and the teacher's, before the mean. mu (--mu, default 1) weights
the intermediate terms; the authors sum them unweighted.

Stages: by default one stage trains every term together. --intermediate_step N runs the
authors' two stages in one run: steps 1..N the intermediate terms only, the rest the
prediction terms only, each stage with its own AdamW moments, warmup and linear decay
(their two runs). Their prediction loss is soft cross-entropy at T = 1: with the defaults
(--softmax_temp 1 --soft_weight 1 --hard_weight 0) our T^2 * KL term has the same
gradient (it differs by the teacher's entropy, a constant).
"""
import torch
from torch import nn
from torch.nn import functional as F

from fine_tune.attention import AttentionCapture
from fine_tune.distillation import DistillationObjective, distil, layer_stride
from fine_tune.errors import UserError
from fine_tune.modeling import move

MASKED = -10000.0  # BERT's additive mask value in the authors' code
ZEROED_BELOW = -100.0  # their code sets scores <= -1e2 (the masked ones) to 0


def attention_scores(query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores [batch, heads, length, length] from per-head queries and keys
    [batch, heads, length, d_head] and the key mask [batch, length], masked as the authors'
    code masks them (module docstring)."""
    with torch.autocast(query.device.type, enabled=False):  # fp32 under --amp bf16 too
        scores = query.float() @ key.float().transpose(-1, -2) / query.shape[-1] ** 0.5
    scores = scores + (~key_mask[:, None, None, :]).to(scores.dtype) * MASKED
    return torch.where(scores <= ZEROED_BELOW, torch.zeros_like(scores), scores)


class TinyBERTObjective(DistillationObjective):
    optimizer_prefix = ""  # the projection trains with the student (--lr), as in their code
    restart_flag = "--intermediate_step"

    def __init__(self, args, teacher_config, device):
        super().__init__(args, device)
        L, n = teacher_config.num_hidden_layers, args.num_hidden_layers
        if args.num_attention_heads != teacher_config.num_attention_heads:
            raise UserError(f"TinyBERT's attention loss compares each student head with the "
                            f"teacher's head of the same number: use --num_attention_heads "
                            f"{teacher_config.num_attention_heads} (the teacher's)")
        self.mapping = [m * layer_stride(L, n) for m in range(1, n + 1)]  # g(m), 1-based
        self.heads, self.mu = args.num_attention_heads, args.mu
        self.restart_step = args.intermediate_step
        self.stage = 0  # 0: one stage, every term; 1: intermediate terms; 2: prediction terms
        width, teacher_width = args.d_model, teacher_config.hidden_size
        self.projection = None
        if width != teacher_width or args.projection == "always":
            # BERT's initialisation, as the authors' fit_dense gets it
            self.projection = nn.Linear(width, teacher_width)
            nn.init.normal_(self.projection.weight, std=teacher_config.initializer_range)
            nn.init.zeros_(self.projection.bias)
            self.to(device)
        self.student_attention = self.teacher_attention = None

    def bind(self, model, teacher) -> None:
        n = len(self.mapping)
        self.student_attention = AttentionCapture(model, range(1, n + 1), ("query", "key"))
        self.teacher_attention = AttentionCapture(teacher, self.mapping, ("query", "key"))

    def start_step(self, step: int, epoch: int) -> None:
        if self.restart_step:
            self.stage = 1 if step <= self.restart_step else 2

    def forward(self, student_out, teacher_out, labels):
        terms = super().forward(student_out, teacher_out, labels)
        if self.stage == 1:
            # The prediction terms are logged as 0 and give no gradient: the pooler and
            # classifier, which only they reach, are left alone by AdamW (weight decay
            # included), as in the authors' first run.
            terms = {name: value.detach() * 0.0 if name in ("hard", "soft") else value
                     for name, value in terms.items()}
        elif self.stage == 2:
            # The intermediate terms are not computed (the projection gets no gradient and
            # is left alone), only logged as 0.
            zero = torch.zeros((), device=self.device)
            terms |= {name: zero for name in self.intermediate_names()}
        return terms

    def intermediate_names(self) -> list[str]:
        n = len(self.mapping)
        return (["embedding"] + [f"hidden_{m}" for m in range(1, n + 1)]
                + [f"attention_{m}" for m in range(1, n + 1)])

    def layer_terms(self, student_out, teacher_out) -> dict:
        if self.stage == 2:
            self.student_attention.outputs.clear()
            self.teacher_attention.outputs.clear()
            return {}
        return self.intermediate_terms(student_out, teacher_out)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        # (under --amp bf16 the projection is a bf16 matmul, as the student's Linears; the
        # MSE is taken in fp32)
        return hidden if self.projection is None else self.projection(hidden).float()

    def intermediate_terms(self, student_out, teacher_out) -> dict:
        student, teacher = student_out.hidden_states, teacher_out.hidden_states
        terms = {"embedding": self.mu * F.mse_loss(self.project(student[0]),
                                                   move(teacher[0], self.device).float())}
        for m, g in enumerate(self.mapping, start=1):
            terms[f"hidden_{m}"] = self.mu * F.mse_loss(self.project(student[m]),
                                                        move(teacher[g], self.device).float())
        mask = self.student_attention.mask(student[0])
        for m, g in enumerate(self.mapping, start=1):
            s = attention_scores(self.student_attention.heads(m, "query", self.heads),
                                 self.student_attention.heads(m, "key", self.heads), mask)
            t = attention_scores(move(self.teacher_attention.heads(g, "query", self.heads), self.device),
                                 move(self.teacher_attention.heads(g, "key", self.heads), self.device),
                                 mask)
            # (the mean over batch, heads and both positions: (1/h) sum_i of each head's MSE)
            terms[f"attention_{m}"] = self.mu * F.mse_loss(s, t)
        self.student_attention.outputs.clear()
        self.teacher_attention.outputs.clear()
        return terms


def distil_tinybert(args) -> None:
    distil(args, lambda args, teacher_config, device, _: TinyBERTObjective(args, teacher_config, device),
           "TinyBERT (2 stages)" if args.intermediate_step else "TinyBERT (1 stage)", same_width=False)
