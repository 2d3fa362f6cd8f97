"""LAD, LAD-NO and partial LAD: gate arithmetic, matching tables, loss and initialisation."""
import argparse
import math
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

from fine_tune.distillation import default_init_pairs, initialise_student, load_pretrained_encoder
from fine_tune.errors import UserError
from fine_tune.lad import (GatedObjective, HighwayGate, lad_no_targets, lad_targets,
                           partial_lad_targets)
from fine_tune.modeling import build_classifier

CPU = torch.device("cpu")
LABELS3 = {0: "contradiction", 1: "entailment", 2: "neutral"}


def loss_args(**changes):
    values = dict(hard_weight=0.5, soft_weight=0.5, softmax_temp=10.0, mu=500.0)
    values.update(changes)
    return argparse.Namespace(**values)


def test_gate_matches_a_hand_computation():
    gate = HighwayGate(d_model=2, max_seq_len=2)
    with torch.no_grad():
        gate.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        gate.linear.bias.copy_(torch.tensor([0.0, 1.0]))
    previous = torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])
    current = torch.tensor([[[4.0, 3.0], [-2.0, 5.0]]])
    # z = sigmoid(W a + b) per position: [s(0), s(-1+1)] = [.5, .5]; [s(2), s(1+1)] = [s(2), s(2)]
    s2 = 1 / (1 + math.exp(-2))
    mixed = [[0.5 * 4 + 0.5 * 0, 0.5 * 3 + 0.5 * 1],
             [s2 * -2 + (1 - s2) * 2, s2 * 5 + (1 - s2) * -1]]
    flat = [v for row in mixed for v in row]
    mean = sum(flat) / 4
    var = sum((v - mean) ** 2 for v in flat) / 4  # joint over sequence and hidden, biased
    expected = torch.tensor([[[(v - mean) / math.sqrt(var + 1e-5) for v in row] for row in mixed]])
    torch.testing.assert_close(gate(previous, current), expected, rtol=1e-5, atol=1e-5)


def test_gate_layer_norm_is_joint_over_sequence_and_hidden():
    torch.manual_seed(0)
    gate = HighwayGate(d_model=8, max_seq_len=5)
    out = gate(torch.randn(3, 5, 8), torch.randn(3, 5, 8) * 4 + 2)
    assert gate.norm.normalized_shape == (5, 8)
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert out.mean(dim=2).abs().max() > 1e-3  # not normalised per position
    with pytest.raises(RuntimeError):
        gate(torch.randn(3, 4, 8), torch.randn(3, 4, 8))  # needs padding to max_seq_len


@pytest.mark.parametrize("L, n, lad, lad_no", [
    (12, 6, [2, 4, 6, 8, 10, 12], [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]),
    (12, 4, [3, 6, 9, 12], [(2, 3), (5, 6), (8, 9), (11, 12)]),
    (6, 3, [2, 4, 6], [(1, 2), (3, 4), (5, 6)]),
])
def test_lad_and_lad_no_matching_tables(L, n, lad, lad_no):
    assert lad_targets(L, n) == [("A", i) for i in lad]
    assert lad_no_targets(L, n) == [("gate", a, b) for a, b in lad_no]


@pytest.mark.parametrize("L, n, gates, students, expected", [
    (12, 6, [2, 4, 6, 8, 10], [1, 2, 3, 4, 5, 6],
     [("A", 2), ("A", 4), ("A", 6), ("A", 8), ("A", 10), ("H", 12)]),
    (12, 4, [3, 6], [1, 2, 3, 4], [("A", 3), ("A", 6), ("H", 9), ("H", 12)]),
    (6, 3, [2], [1, 2, 3], [("A", 2), ("H", 4), ("H", 6)]),
    # As the authors: the ungated layers learn H at max(gate)+k, +2k, .. and the rest nothing.
    (12, 6, [3, 6], [1, 2, 3, 4, 5, 6],
     [("A", 3), ("A", 6), ("H", 8), ("H", 10), ("H", 12), ("H", None)]),
    (12, 6, [2], [1, 2, 3, 4, 5, 6],
     [("A", 2), ("H", 4), ("H", 6), ("H", 8), ("H", 10), ("H", 12)]),
    (12, 6, [4, 8], [2, 5], [("H", 10), ("A", 4), ("H", 12), ("H", None), ("A", 8), ("H", None)]),
])
def test_partial_lad_matching_tables(L, n, gates, students, expected):
    assert partial_lad_targets(L, n, gates, students) == expected


@pytest.mark.parametrize("gates, students, message", [
    ([2, 13], [1, 2], "--gate_indices 2,13: layer numbers run from 1 to 12"),
    ([0, 2], [1, 2], "--gate_indices 0,2: layer numbers run from 1 to 12"),
    ([2, 4], [1, 7], "--student_indices 1,7: layer numbers run from 1 to 6"),
    ([2, 2], [1, 2], "--gate_indices 2,2 repeats a layer"),
    ([4, 2], [1, 2], "--gate_indices 4,2 must be in increasing order"),
    ([2, 4, 6], [1, 2], "--gate_indices has 3 layers but --student_indices only 2"),
])
def test_partial_lad_rejects_bad_indices(gates, students, message):
    with pytest.raises(UserError, match=message):
        partial_lad_targets(12, 6, gates, students)


def fake_outputs(logits, hidden, requires_grad=False):
    hidden = [h.clone().requires_grad_(requires_grad) for h in hidden]
    return SimpleNamespace(logits=logits.clone().requires_grad_(requires_grad), hidden_states=hidden)


def test_partial_lad_unmatched_layers_get_no_hidden_term_and_weights_stay_mu_over_n():
    """With --gate_indices 3,6 (12 -> 6 layers) S_6 has no target; each matched term keeps
    the weight mu / n, n = 6 student layers, as in the authors' code."""
    torch.manual_seed(0)
    targets = partial_lad_targets(12, 6, [3, 6], [1, 2, 3, 4, 5, 6])
    objective = GatedObjective(loss_args(mu=6.0), targets, CPU, CPU, 4, 3)
    H = [torch.randn(2, 3, 4) for _ in range(12)]
    S = [torch.randn(2, 3, 4) for _ in range(6)]
    terms = objective.hidden_terms(S, H)
    assert sorted(terms) == [f"hidden_{j}" for j in range(1, 6)]
    torch.testing.assert_close(terms["hidden_3"], 1.0 * F.mse_loss(S[2], H[7]))  # S_3 -> H_8
    torch.testing.assert_close(terms["hidden_5"], 1.0 * F.mse_loss(S[4], H[11]))  # S_5 -> H_12
    assert objective.describe()["student_targets"]["S_6"] == "none (no hidden loss)"


def test_loss_equals_the_formula_and_gradients_reach_student_and_gates():
    torch.manual_seed(0)
    B, S, D, L, n = 3, 4, 6, 4, 2
    args = loss_args(hard_weight=0.3, soft_weight=0.7, softmax_temp=2.0, mu=10.0)
    objective = GatedObjective(args, lad_targets(L, n), CPU, CPU, D, S)
    teacher = fake_outputs(torch.randn(B, 3) * 3, [torch.randn(B, S, D) for _ in range(L + 1)])
    student = fake_outputs(torch.randn(B, 3), [torch.randn(B, S, D) for _ in range(n + 1)], True)
    labels = torch.tensor([0, 2, 1])
    terms = objective(student, teacher, labels)

    T = 2.0
    p_teacher = torch.softmax(teacher.logits / T, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student.logits / T, -1))).sum() / B
    H = teacher.hidden_states[1:]
    A2 = objective.gates[0](H[0], H[1])               # A_1 = H_1, A_2 = Gate(A_1, H_2)
    A4 = objective.gates[2](objective.gates[1](A2, H[2]), H[3])
    expected = {
        "hard": 0.3 * F.cross_entropy(student.logits, labels),
        "soft": 0.7 * T * T * kl,
        "hidden_1": 10.0 / n * ((student.hidden_states[1] - A2) ** 2).mean(),
        "hidden_2": 10.0 / n * ((student.hidden_states[2] - A4) ** 2).mean(),
    }
    assert terms.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(terms[name], expected[name], msg=name)
    assert len(objective.gates) == L - 1

    sum(terms.values()).backward()
    assert student.logits.grad.abs().sum() > 0
    assert all(h.grad.abs().sum() > 0 for h in student.hidden_states[1:])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())
    assert all(not h.requires_grad for h in teacher.hidden_states)


def test_gates_learn_only_through_the_hidden_loss():
    torch.manual_seed(0)
    objective = GatedObjective(loss_args(mu=0.0), lad_targets(4, 2), CPU, CPU, 6, 4)
    teacher = fake_outputs(torch.randn(2, 3), [torch.randn(2, 4, 6) for _ in range(5)])
    student = fake_outputs(torch.randn(2, 3), [torch.randn(2, 4, 6) for _ in range(3)], True)
    terms = objective(student, teacher, torch.tensor([0, 1]))
    (terms["hard"] + terms["soft"]).backward()
    assert all(p.grad is None for p in objective.parameters())


def test_lad_no_gates_are_not_chained():
    torch.manual_seed(0)
    objective = GatedObjective(loss_args(mu=2.0), lad_no_targets(4, 2), CPU, CPU, 6, 4)
    H = [torch.randn(2, 4, 6) for _ in range(5)]
    student = [torch.randn(2, 4, 6) for _ in range(3)]
    terms = objective.hidden_terms(student[1:], H[1:])
    for j, (a, b) in enumerate([(1, 2), (3, 4)]):
        target = objective.gates[j](H[a], H[b])
        torch.testing.assert_close(terms[f"hidden_{j + 1}"], 1.0 * F.mse_loss(student[j + 1], target))


@pytest.fixture(scope="module")
def pretrained(assets):
    return load_pretrained_encoder(str(assets[2]))  # 4 layers, hidden 32


def student_model(pretrained, layers):
    config = pretrained.config.to_dict() | {"num_hidden_layers": layers, "id2label": LABELS3}
    return build_classifier(config)


@pytest.mark.parametrize("copy_embeddings", [True, False])
def test_initialisation_copies_exactly_the_named_layers(pretrained, copy_embeddings):
    torch.manual_seed(0)
    student = student_model(pretrained, 2)
    random_embeddings = student.bert.embeddings.word_embeddings.weight.clone()
    args = argparse.Namespace(num_hidden_layers=2, student_init="even")
    pairs = default_init_pairs(args, source_layers=4)
    assert pairs == [(1, 2), (2, 4)]
    initialise_student(student, pretrained, pairs, copy_embeddings=copy_embeddings)
    for s, t in pairs:
        for name, value in student.bert.encoder.layer[s - 1].state_dict().items():
            assert torch.equal(value, pretrained.encoder.layer[t - 1].state_dict()[name]), name
    assert torch.equal(student.bert.pooler.dense.weight, pretrained.pooler.dense.weight)
    embeddings = student.bert.embeddings.state_dict()
    for name, value in pretrained.embeddings.state_dict().items():
        if name.endswith("position_ids") or name.endswith("token_type_ids"):
            continue
        if copy_embeddings:
            assert torch.equal(embeddings[name], value), name
        elif name.endswith("_embeddings.weight"):  # random tables differ from pre-trained ones
            assert not torch.equal(embeddings[name], value), name
    if not copy_embeddings:  # the authors' random tables: N(0, 0.02), the padding row too
        pad = student.config.pad_token_id
        keep = torch.arange(len(random_embeddings)) != pad
        assert torch.equal(student.bert.embeddings.word_embeddings.weight[keep], random_embeddings[keep])
        assert bool(random_embeddings[pad].eq(0).all())  # transformers 5 zeroes it ...
        assert not bool(student.bert.embeddings.word_embeddings.weight[pad].eq(0).any())  # we not
        assert 0.01 < float(student.bert.embeddings.word_embeddings.weight.detach().std()) < 0.03
    first = default_init_pairs(argparse.Namespace(num_hidden_layers=2, student_init="first"), 4)
    assert first == [(1, 1), (2, 2)]


def test_partial_initialisation_leaves_unpaired_layers_random(pretrained):
    torch.manual_seed(0)
    student = student_model(pretrained, 2)
    before = student.bert.encoder.layer[1].attention.self.query.weight.clone()
    initialise_student(student, pretrained, list(zip([1, 2], [3])), copy_embeddings=True)
    assert torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                       pretrained.encoder.layer[2].attention.self.query.weight)
    assert torch.equal(student.bert.encoder.layer[1].attention.self.query.weight, before)


def test_student_misfits_are_listed_in_one_message(pretrained):
    """The seed's student flags against a 4-layer, 32-wide teacher: one line with every flag
    to change and the value to use (here for partial LAD, whose indices follow)."""
    from fine_tune.distillation import student_misfits
    from fine_tune.lad import partial_index_misfits
    args = argparse.Namespace(d_model=768, d_ff=3072, num_attention_heads=12, num_hidden_layers=6,
                              gate_indices=[2, 4, 6, 8, 10], student_indices=[1, 2, 3, 4, 5, 6])
    with pytest.raises(UserError) as error:
        student_misfits(args, pretrained.config, lambda L: range(1, L + 1), partial_index_misfits)
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith("use --d_model 32 --d_ff 64 --num_attention_heads 2 "
                            "--num_hidden_layers 2 --gate_indices 2 --student_indices 1,2"), message
    assert "--num_hidden_layers 6 is outside what this method takes" in message and "--gate_indices 2,4,6,8,10" in message
    fixed = argparse.Namespace(d_model=32, d_ff=64, num_attention_heads=2, num_hidden_layers=2,
                               gate_indices=[2], student_indices=[1, 2])
    student_misfits(fixed, pretrained.config, lambda L: range(1, L + 1), partial_index_misfits)  # no error
    # One misfit: its own sentence and the fix.
    with pytest.raises(UserError, match=r"^--d_ff 128 differs from the teacher's feed-forward "
                                        r"size 64; use --d_ff 64$"):
        student_misfits(argparse.Namespace(**vars(fixed) | {"d_ff": 128}), pretrained.config,
                        lambda L: range(1, L + 1))
