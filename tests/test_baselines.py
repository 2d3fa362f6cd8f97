"""ALP-KD and BERT-PKD: attention weights, targets, matching tables and losses."""
import argparse
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from fine_tune.alp import ALPObjective, attention_targets
from fine_tune.pkd import PKDObjective, normalised_mse, pkd_teacher_layers

CPU = torch.device("cpu")


def test_attention_weights_and_target_by_hand():
    student = torch.tensor([1.0, 0.0, 0.0, 1.0])           # d = 4, sqrt(d) = 2
    teachers = torch.tensor([[2.0, 0.0, 0.0, 0.0],          # <s, t_1> = 2 -> score 1
                             [0.0, 0.0, 0.0, 6.0],          # 6 -> 3
                             [0.0, 1.0, 1.0, 0.0]])         # 0 -> 0
    e = [math.exp(1), math.exp(3), math.exp(0)]
    alpha = torch.tensor([v / sum(e) for v in e])
    target, got_alpha = attention_targets(student, teachers)
    torch.testing.assert_close(got_alpha, alpha)
    torch.testing.assert_close(target, (alpha[:, None] * teachers).sum(0))
    # Only the first two teacher layers visible (the v2 mask for j*k = 2).
    e2 = e[:2]
    alpha2 = torch.tensor([v / sum(e2) for v in e2])
    target2, got_alpha2 = attention_targets(student, teachers, visible=2)
    torch.testing.assert_close(got_alpha2, alpha2)
    torch.testing.assert_close(target2, (alpha2[:, None] * teachers[:2]).sum(0))


def test_attention_is_stable_with_large_scores():
    student = torch.full((8,), 16.0)  # scores 724 and 679: exp() overflows even in fp32
    teachers = torch.stack([torch.full((8,), 16.0), torch.full((8,), 15.0)])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        target, alpha = attention_targets(student.to(dtype), teachers.to(dtype))
        assert torch.isfinite(target).all() and torch.isfinite(alpha).all(), dtype
        assert alpha[0] > 0.99  # the first layer takes all the weight
        torch.testing.assert_close(target.float(), teachers[0], rtol=1e-2, atol=0)
    naive = torch.exp(torch.tensor([16.0 * 16 * 8 / math.sqrt(8)]))
    assert not torch.isfinite(naive).all()  # what the authors' plain exp does


def outputs(logits, hidden, grad=False):
    return SimpleNamespace(logits=logits.requires_grad_(grad),
                           hidden_states=[h.requires_grad_(grad) for h in hidden])


def args_for(**values):
    base = dict(hard_weight=0.5, soft_weight=0.5, softmax_temp=10.0, mu=6.0, num_hidden_layers=2,
                layer_map="uniform", seed=42)
    return argparse.Namespace(**(base | values))


@pytest.mark.parametrize("variant", ["alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2"])
def test_alp_variants_against_a_direct_computation(variant):
    torch.manual_seed(0)
    B, S, D, L, n = 2, 3, 4, 4, 2
    objective = ALPObjective(args_for(alp_exp=variant), L, CPU)
    H = [torch.randn(B, S, D) for _ in range(L)]
    students = [torch.randn(B, S, D, requires_grad=True) for _ in range(n)]
    terms = objective.hidden_terms(students, H)
    for j in range(1, n + 1):
        s = students[j - 1]
        visible = j * 2 if variant.endswith("v2") else L
        if variant == "alp-kd":
            scores = torch.stack([(s[:, 0] * H[m][:, 0]).sum(-1) for m in range(visible)], -1) / 2
            alpha = torch.softmax(scores, -1)                               # [B, visible]
            target = sum(alpha[:, m, None] * H[m][:, 0] for m in range(visible))
            expected = 6.0 / n * ((s[:, 0] - target) ** 2).mean()
        else:
            scores = torch.stack([(s * H[m]).sum(-1) for m in range(visible)], -1) / 2
            alpha = torch.softmax(scores, -1)                               # [B, S, visible]
            target = sum(alpha[..., m, None] * H[m] for m in range(visible))
            expected = 6.0 / n * ((s - target) ** 2).mean()
        torch.testing.assert_close(terms[f"hidden_{j}"], expected)
    # Gradients reach the student through alpha as well as through the MSE.
    sum(terms.values()).backward()
    assert all(s.grad.abs().sum() > 0 for s in students)


def test_v2_mask_ignores_later_teacher_layers():
    torch.manual_seed(0)
    objective = ALPObjective(args_for(alp_exp="alp-kd-hidden-v2"), 4, CPU)
    H = [torch.randn(2, 3, 4) for _ in range(4)]
    students = [torch.randn(2, 3, 4) for _ in range(2)]
    first = objective.hidden_terms(students, H)["hidden_1"]
    changed = H[:2] + [H[2] * 100, H[3] + 5]      # layers 3, 4 are beyond j*k = 2
    assert torch.equal(objective.hidden_terms(students, changed)["hidden_1"], first)
    assert not torch.equal(objective.hidden_terms(students, changed)["hidden_2"],
                           objective.hidden_terms(students, H)["hidden_2"])


@pytest.mark.parametrize("L, n, mse, skip", [
    (12, 6, [2, 4, 6, 8, 10, 12], [2, 4, 6, 8, 10]),
    (12, 4, [3, 6, 9, 12], [3, 6, 9]),
    (6, 3, [2, 4, 6], [2, 4]),
])
def test_pkd_matching_tables(L, n, mse, skip):
    assert pkd_teacher_layers(L, n, "mse") == mse
    assert pkd_teacher_layers(L, n, "pkd-skip") == skip


def test_pkd_losses_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [0.0, 5.0]])
    # |(.6, .8) - (0, 1)|^2 = .36 + .04 = .4 ; |(1, 0) - (0, 1)|^2 = 2 ; mean over the
    # 2 x 2 elements: 2.4 / 4 = 0.6
    assert float(normalised_mse(s, t)) == pytest.approx(0.6)

    torch.manual_seed(0)
    H = [torch.randn(2, 3, 4) for _ in range(4)]
    S = [torch.randn(2, 3, 4) for _ in range(2)]
    mse = PKDObjective(args_for(pkd_loss="mse"), 4, CPU).hidden_terms(S, H)
    assert mse.keys() == {"hidden_1", "hidden_2"}
    torch.testing.assert_close(mse["hidden_2"], 3.0 * F.mse_loss(S[1], H[3]))  # last layer included
    skip = PKDObjective(args_for(pkd_loss="pkd-skip"), 4, CPU).hidden_terms(S, H)
    assert skip.keys() == {"hidden_1"}
    torch.testing.assert_close(skip["hidden_1"], 6.0 * normalised_mse(S[0][:, 0], H[1][:, 0]))


def test_pkd_skip_is_scaled_as_the_original_pkd_code():
    """The PKD authors: beta * F.mse_loss over the stacked [batch, n-1, d] normalised [CLS]
    vectors, a mean over batch, layers and hidden size (not a sum over layers and hidden)."""
    torch.manual_seed(1)
    H = [torch.randn(3, 5, 8) for _ in range(6)]
    S = [torch.randn(3, 5, 8) for _ in range(3)]
    terms = PKDObjective(args_for(pkd_loss="pkd-skip", num_hidden_layers=3), 6, CPU).hidden_terms(S, H)
    students = F.normalize(torch.stack([S[0][:, 0], S[1][:, 0]], dim=1), dim=2)  # layers 1, 2
    teachers = F.normalize(torch.stack([H[1][:, 0], H[3][:, 0]], dim=1), dim=2)  # layers 2, 4
    torch.testing.assert_close(sum(terms.values()), 6.0 * F.mse_loss(teachers, students))
