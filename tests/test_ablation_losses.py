"""The ablation methods' losses against independent computations from the papers' equations:
TinyBERT (Jiao et al. 2020, eqs 7-10), MiniLMv2 relations (Wang et al. 2021, eqs 1-4),
vanilla KD, BERT-PKD's --layer_map last|random, LAD's --gate_mode uniform|frozen, and the
two-stage learning-rate schedule. Every expected value is written out here (loops or plain
torch ops on tiny tensors and tiny BERTs), never through the modules' own helpers."""
import argparse
import math
import re
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from fine_tune.errors import UserError
from fine_tune.kd import KDObjective
from fine_tune.lad import GatedObjective, lad_targets
from fine_tune.minilm import MiniLMObjective
from fine_tune.pkd import PKDObjective, random_layers
from fine_tune.tinybert import TinyBERTObjective, attention_scores
from fine_tune.training.optim import OptimizerSettings

CPU = torch.device("cpu")
TOL = dict(rtol=1e-6, atol=1e-6)


def args_for(**values):
    base = dict(hard_weight=0.5, soft_weight=0.5, softmax_temp=2.0, mu=3.0, num_hidden_layers=2,
                task="mnli")
    return argparse.Namespace(**(base | values))


def outputs(logits, hidden, grad=False):
    return SimpleNamespace(logits=logits.requires_grad_(grad),
                           hidden_states=[h.requires_grad_(grad) for h in hidden])


def bert(width, layers, heads, seed, attention="eager"):
    """A tiny BERT in eval mode (no dropout), weights large enough (std 0.3) that attention
    scores and relations are far from zero."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * width,
                        max_position_embeddings=16, num_labels=3, initializer_range=0.3,
                        attn_implementation=attention)
    return BertForSequenceClassification(config).eval()


# Two rows of 6 tokens; the second is padded after 4.
IDS = torch.tensor([[1, 7, 12, 30, 44, 2], [1, 9, 21, 2, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
LABELS = torch.tensor([0, 2])


def run_pair(student, teacher):
    student_out = student(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    with torch.no_grad():
        teacher_out = teacher(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    return student_out, teacher_out


def projection_of(model, layer, name, hidden_states):
    """Layer `layer`'s (1-based) query/key/value Linear applied to that layer's input."""
    linear = getattr(model.bert.encoder.layer[layer - 1].attention.self, name)
    return linear(hidden_states[layer - 1]).detach().double()


def mse(a, b):
    return ((a.double() - b.double()) ** 2).mean()


def logit_terms(student_logits, teacher_logits, labels, args):
    """hard_weight * CE and soft_weight * T^2 * KL(p_T || p_S), batch means, by hand."""
    s, t, T = student_logits.detach().double(), teacher_logits.detach().double(), args.softmax_temp
    hard = soft = 0.0
    for b in range(s.shape[0]):
        hard -= s[b, labels[b]] - torch.log(torch.exp(s[b]).sum())
        p_t = torch.exp(t[b] / T) / torch.exp(t[b] / T).sum()
        p_s = torch.exp(s[b] / T) / torch.exp(s[b] / T).sum()
        soft += (p_t * (torch.log(p_t) - torch.log(p_s))).sum()
    n = s.shape[0]
    return args.hard_weight * hard / n, args.soft_weight * T * T * soft / n


# ---- TinyBERT ----------------------------------------------------------------------------

def tinybert_attention(model, layer, hidden_states, heads):
    """A = Q_h K_h^T / sqrt(d_head) per example and head, from the layer's query and key
    applied to its input; a padded key gets -10000 and every score <= -100 becomes 0."""
    q = projection_of(model, layer, "query", hidden_states)
    k = projection_of(model, layer, "key", hidden_states)
    batch, length, width = q.shape
    d = width // heads
    scores = torch.zeros(batch, heads, length, length, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                for j in range(length):
                    head = slice(h * d, (h + 1) * d)
                    value = float(q[b, i, head] @ k[b, j, head]) / math.sqrt(d)
                    if MASK[b, j] == 0:
                        value += -10000.0
                    scores[b, h, i, j] = 0.0 if value <= -100 else value
    return scores


def tinybert_expected(objective, student, teacher, student_out, teacher_out, mu, heads):
    W = objective.projection
    weight, bias = W.weight.detach().double(), W.bias.detach().double()
    S = [h.detach().double() @ weight.T + bias for h in student_out.hidden_states]  # E_S W, H_S W
    T = [h.detach().double() for h in teacher_out.hidden_states]
    n = len(S) - 1
    k = (len(T) - 1) // n
    expected = {"embedding": mu * mse(S[0], T[0])}
    for m in range(1, n + 1):
        expected[f"hidden_{m}"] = mu * mse(S[m], T[m * k])
    for m in range(1, n + 1):
        a_s = tinybert_attention(student, m, student_out.hidden_states, heads)
        a_t = tinybert_attention(teacher, m * k, teacher_out.hidden_states, heads)
        expected[f"attention_{m}"] = mu * ((a_s - a_t) ** 2).mean()
    return expected


def tinybert_setup(**changes):
    teacher = bert(32, 4, 2, seed=1, attention="sdpa")
    student = bert(16, 2, 2, seed=2, attention="eager")
    args = args_for(**(dict(d_model=16, num_attention_heads=2, intermediate_step=0, mu=2.0,
                            projection="auto") | changes))
    torch.manual_seed(3)
    objective = TinyBERTObjective(args, teacher.config, CPU)
    objective.bind(student, teacher)
    return args, objective, student, teacher


def test_tinybert_terms_against_the_equations_with_padding_and_a_narrower_student():
    args, objective, student, teacher = tinybert_setup()
    assert objective.projection is not None
    assert (objective.projection.in_features, objective.projection.out_features) == (16, 32)
    student_out, teacher_out = run_pair(student, teacher)
    terms = objective(student_out, teacher_out, LABELS)
    expected = tinybert_expected(objective, student, teacher, student_out, teacher_out, 2.0, 2)
    hard, soft = logit_terms(student_out.logits, teacher_out.logits, LABELS, args)
    expected |= {"hard": hard, "soft": soft}
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(terms[name].double(), value, **TOL, msg=name)
    # The masking mattered: the padded keys' scores really were replaced by 0.
    scores = tinybert_attention(student, 1, student_out.hidden_states, 2)
    assert (scores[1, :, :, 4:] == 0).all() and (scores[0] != 0).all()
    # Meaningful sizes: the attention terms are not vanishingly small.
    assert all(float(expected[f"attention_{m}"]) > 1e-2 for m in (1, 2))


def test_tinybert_attention_scores_by_hand():
    query = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]]])          # [1, 1 head, 2 positions, 2]
    key = torch.tensor([[[[3.0, 0.0], [1.0, 1.0]]]])
    mask = torch.tensor([[True, False]])
    # q0.k0 = 3, q1.k0 = 0 (both / sqrt 2); key 1 is padded: 0
    expected = torch.tensor([[[[3 / math.sqrt(2), 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(attention_scores(query, key, mask), expected, **TOL)
    # A real score of -150 (below -100) is also zeroed, as in the authors' code.
    big = attention_scores(torch.tensor([[[[-150.0]]]]), torch.tensor([[[[1.0]]]]),
                           torch.tensor([[True]]))
    assert float(big) == 0.0


def test_tinybert_two_stages():
    args, objective, student, teacher = tinybert_setup(intermediate_step=3)
    intermediate = {"embedding", "hidden_1", "hidden_2", "attention_1", "attention_2"}

    objective.start_step(2, 0)   # stage 1: the intermediate terms only
    student_out, teacher_out = run_pair(student, teacher)
    terms = objective(student_out, teacher_out, LABELS)
    expected = tinybert_expected(objective, student, teacher, student_out, teacher_out, 2.0, 2)
    for name in intermediate:
        assert terms[name].requires_grad, name
        torch.testing.assert_close(terms[name].double(), expected[name], **TOL, msg=name)
    for name in ("hard", "soft"):
        assert not terms[name].requires_grad and float(terms[name]) == 0.0, name
    sum(terms.values()).backward()
    assert objective.projection.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad is None  # reached only by hard and soft

    student.zero_grad(set_to_none=True)
    objective.zero_grad(set_to_none=True)
    objective.start_step(4, 0)   # stage 2: the prediction terms only
    student_out, teacher_out = run_pair(student, teacher)
    terms = objective(student_out, teacher_out, LABELS)
    hard, soft = logit_terms(student_out.logits, teacher_out.logits, LABELS, args)
    for name, value in (("hard", hard), ("soft", soft)):
        assert terms[name].requires_grad, name
        torch.testing.assert_close(terms[name].double(), value, **TOL, msg=name)
    for name in intermediate:
        assert not terms[name].requires_grad and float(terms[name]) == 0.0, name
    sum(terms.values()).backward()
    assert objective.projection.weight.grad is None
    assert student.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("projection", ["auto", "always"])
def test_tinybert_projects_equal_widths_only_when_asked(projection):
    """--projection auto: the identity for a student as wide as its teacher (its hidden
    term is the plain MSE to the teacher's layer); always: a learnt W, as the authors' code."""
    teacher, student = bert(32, 4, 2, seed=1), bert(32, 2, 2, seed=2)
    args = args_for(d_model=32, num_attention_heads=2, intermediate_step=0, mu=2.0,
                    projection=projection)
    objective = TinyBERTObjective(args, teacher.config, CPU)
    objective.bind(student, teacher)
    assert (objective.projection is None) == (projection == "auto")
    student_out, teacher_out = run_pair(student, teacher)
    terms = objective(student_out, teacher_out, LABELS)
    s, t = student_out.hidden_states[1], teacher_out.hidden_states[2]
    if projection == "always":
        s = s @ objective.projection.weight.T + objective.projection.bias
    assert float(terms["hidden_1"].detach()) == pytest.approx(2.0 * float(mse(s, t).detach()), rel=1e-6)


def test_tinybert_needs_the_teachers_head_count():
    teacher = bert(32, 4, 2, seed=1)
    with pytest.raises(UserError, match="--num_attention_heads 2"):
        TinyBERTObjective(args_for(d_model=16, num_attention_heads=4, intermediate_step=0),
                          teacher.config, CPU)


# ---- MiniLM ------------------------------------------------------------------------------

def relation_loss(x_teacher, x_student, mask, r):
    """Mean over the batch of 1/(r |x|) sum_a sum_t KL(R^T_a,t || R^S_a,t), t and the
    keys running over each example's real tokens only."""
    total = 0.0
    for b in range(x_teacher.shape[0]):
        real = [i for i in range(mask.shape[1]) if mask[b, i]]
        per_example = 0.0
        for a in range(r):
            rows = []
            for x in (x_teacher[b], x_student[b]):
                d = x.shape[-1] // r
                head = x[:, a * d:(a + 1) * d]
                rows.append([torch.softmax(torch.tensor([float(head[t] @ head[u]) / math.sqrt(d)
                                                         for u in real], dtype=torch.float64), 0)
                             for t in real])
            for p_t, p_s in zip(*rows):
                per_example += float((p_t * (torch.log(p_t) - torch.log(p_s))).sum())
        total += per_example / (r * len(real))
    return total / x_teacher.shape[0]


def minilm_setup(teacher_layer=None, student_attention="eager"):
    """A 32-wide, 2-head teacher and a 16-wide, 4-head student, r = 4, mu 1.5."""
    teacher = bert(32, 2, 2, seed=4, attention="sdpa")
    student = bert(16, 2, 4, seed=5, attention=student_attention)
    args = args_for(d_model=16, num_attention_heads=4, minilm_teacher_layer=teacher_layer,
                    relation_heads=4, mu=1.5)
    objective = MiniLMObjective(args, teacher.config, CPU)
    objective.bind(student, teacher)
    return args, objective, student, teacher


@pytest.mark.parametrize("teacher_layer", [None, 1])
def test_minilm_relations_against_the_equations(teacher_layer):
    args, objective, student, teacher = minilm_setup(teacher_layer)
    student_out, teacher_out = run_pair(student, teacher)
    terms = objective(student_out, teacher_out, LABELS)
    assert terms.keys() == {"hard", "soft", "relation_qq", "relation_kk", "relation_vv"}
    layer = teacher_layer or 2
    for name in ("query", "key", "value"):
        x_teacher = projection_of(teacher, layer, name, teacher_out.hidden_states)
        x_student = projection_of(student, 2, name, student_out.hidden_states)
        expected = 1.5 * relation_loss(x_teacher, x_student, MASK, 4)
        assert expected > 1e-2
        got = terms[f"relation_{name[0]}{name[0]}"]
        assert got.requires_grad
        torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64),
                                   **TOL, msg=name)
    hard, soft = logit_terms(student_out.logits, teacher_out.logits, LABELS, args)
    torch.testing.assert_close(terms["hard"].double(), hard, **TOL)
    torch.testing.assert_close(terms["soft"].double(), soft, **TOL)


def test_minilm_loss_does_not_depend_on_padding():
    """What lets MiniLM take --dynamic_padding: three more pad columns change no term."""
    _, objective, student, teacher = minilm_setup(student_attention="sdpa")
    terms = []
    for pad in (0, 3):
        ids = torch.cat([IDS, torch.zeros(2, pad, dtype=IDS.dtype)], 1)
        mask = torch.cat([MASK, torch.zeros(2, pad, dtype=MASK.dtype)], 1)
        with torch.no_grad():
            outs = [model(input_ids=ids, attention_mask=mask) for model in (student, teacher)]
            terms.append({k: float(v) for k, v in objective(*outs, LABELS).items()})
    assert terms[0].keys() == terms[1].keys()
    for name in terms[0]:
        assert terms[1][name] == pytest.approx(terms[0][name], rel=1e-5, abs=1e-7), name


def test_minilm_relation_heads_default_to_the_teachers_heads():
    teacher = bert(32, 2, 2, seed=4)
    args = args_for(d_model=16, num_attention_heads=4, minilm_teacher_layer=None,
                    relation_heads=None)
    objective = MiniLMObjective(args, teacher.config, CPU)
    assert objective.relation_heads == 2 and objective.teacher_layer == 2


@pytest.mark.parametrize("student_width, r", [(16, 3), (16, 5), (24, 3), (16, 32)])
def test_minilm_relation_heads_that_do_not_divide_name_one_that_does(student_width, r):
    teacher = bert(32, 2, 2, seed=4)
    args = args_for(d_model=student_width, num_attention_heads=4, minilm_teacher_layer=None,
                    relation_heads=r)
    with pytest.raises(UserError) as raised:
        MiniLMObjective(args, teacher.config, CPU)
    suggested = re.search(r"use --relation_heads (\d+)", str(raised.value))
    assert suggested, str(raised.value)
    works = int(suggested.group(1))
    assert student_width % works == 0 and 32 % works == 0
    MiniLMObjective(args_for(**(vars(args) | {"relation_heads": works})), teacher.config, CPU)


# ---- KD ----------------------------------------------------------------------------------

def test_kd_terms_by_hand():
    torch.manual_seed(6)
    args = args_for(hard_weight=0.3, soft_weight=0.7, softmax_temp=4.0)
    student = outputs(torch.randn(4, 3) * 3, [torch.randn(4, 5, 8)], grad=True)
    teacher = outputs(torch.randn(4, 3) * 3, [torch.randn(4, 5, 8)])
    labels = torch.tensor([0, 1, 2, 1])
    objective = KDObjective(args, CPU)
    assert objective.needs_teacher
    terms = objective(student, teacher, labels)
    assert terms.keys() == {"hard", "soft"}
    hard, soft = logit_terms(student.logits, teacher.logits, labels, args)
    torch.testing.assert_close(terms["hard"].double(), hard, **TOL)
    torch.testing.assert_close(terms["soft"].double(), soft, **TOL)
    assert float(soft) > 1e-2


def test_kd_labels_only_needs_no_teacher():
    torch.manual_seed(7)
    args = args_for(hard_weight=1.0, soft_weight=0.0)
    objective = KDObjective(args, CPU)
    assert objective.needs_teacher is False
    student = outputs(torch.randn(3, 3), [torch.randn(3, 4, 8)], grad=True)
    labels = torch.tensor([2, 0, 1])
    terms = objective(student, None, labels)
    assert terms.keys() == {"hard"}
    hard, _ = logit_terms(student.logits, student.logits, labels, args)
    torch.testing.assert_close(terms["hard"].double(), hard, **TOL)


# ---- BERT-PKD --layer_map ----------------------------------------------------------------

def pkd_inputs(L, n, seed=8):
    torch.manual_seed(seed)
    teacher = outputs(torch.randn(2, 3), [torch.randn(2, 4, 8) for _ in range(L + 1)])
    student = outputs(torch.randn(2, 3), [torch.randn(2, 4, 8) for _ in range(n + 1)], grad=True)
    return student, teacher


def hidden_only(terms):
    return {name: value for name, value in terms.items() if name.startswith("hidden_")}


def test_pkd_last_matches_only_the_last_layers():
    L, n, mu = 6, 3, 6.0
    student, teacher = pkd_inputs(L, n)
    objective = PKDObjective(args_for(pkd_loss="mse", layer_map="last", seed=1, mu=mu,
                                      num_hidden_layers=n), L, CPU)
    objective.start_step(1, 0)
    terms = hidden_only(objective(student, teacher, LABELS))
    assert terms.keys() == {"hidden_3"}
    expected = mu / n * mse(student.hidden_states[n], teacher.hidden_states[L])
    torch.testing.assert_close(terms["hidden_3"].double(), expected, **TOL)


def test_pkd_last_with_pkd_skip_is_refused():
    with pytest.raises(UserError):
        PKDObjective(args_for(pkd_loss="pkd-skip", layer_map="last", seed=1, num_hidden_layers=3),
                     6, CPU)


@pytest.mark.parametrize("loss, pool", [("mse", 12), ("pkd-skip", 11)])
def test_random_layers_draws(loss, pool):
    draws = [random_layers(12, 4, loss, 5, epoch) for epoch in range(20)]
    for epoch, draw in enumerate(draws):
        assert len(draw) == 4 and len(set(draw)) == 4 and draw == sorted(draw)
        assert all(1 <= i <= pool for i in draw)
        assert random_layers(12, 4, loss, 5, epoch) == draw      # same (seed, epoch), same draw
    assert len({tuple(d) for d in draws[:4]}) > 1                # a few epochs: not all equal
    assert max(max(d) for d in draws) == pool                    # the pool's top layer is drawn
    assert min(min(d) for d in draws) == 1
    assert [random_layers(12, 4, loss, 6, e) for e in range(20)] != draws  # the seed matters


def test_pkd_random_terms_follow_the_epochs_draw():
    L, n, mu, seed = 6, 3, 6.0, 11
    student, teacher = pkd_inputs(L, n)
    objective = PKDObjective(args_for(pkd_loss="mse", layer_map="random", seed=seed, mu=mu,
                                      num_hidden_layers=n), L, CPU)
    seen = set()
    for step, epoch in ((1, 0), (2, 0), (3, 1), (4, 2), (5, 3)):
        objective.start_step(step, epoch)
        drawn = random_layers(L, n, "mse", seed, epoch)
        seen.add(tuple(drawn))
        terms = hidden_only(objective(student, teacher, LABELS))
        assert terms.keys() == {f"hidden_{j}" for j in range(1, n + 1)}
        for j in range(1, n + 1):
            expected = mu / n * mse(student.hidden_states[j], teacher.hidden_states[drawn[j - 1]])
            torch.testing.assert_close(terms[f"hidden_{j}"].double(), expected, **TOL)
    assert len(seen) > 1


def test_pkd_random_with_pkd_skip():
    L, n, mu, seed = 6, 3, 6.0, 2
    student, teacher = pkd_inputs(L, n)
    objective = PKDObjective(args_for(pkd_loss="pkd-skip", layer_map="random", seed=seed, mu=mu,
                                      num_hidden_layers=n), L, CPU)
    objective.start_step(1, 4)
    drawn = random_layers(L, n - 1, "pkd-skip", seed, 4)
    terms = hidden_only(objective(student, teacher, LABELS))
    assert terms.keys() == {"hidden_1", "hidden_2"}
    for j in (1, 2):
        s = student.hidden_states[j][:, 0].detach().double()
        t = teacher.hidden_states[drawn[j - 1]][:, 0].double()
        s, t = s / s.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        expected = mu / (n - 1) * ((s - t) ** 2).mean()
        torch.testing.assert_close(terms[f"hidden_{j}"].double(), expected, **TOL)


# ---- LAD --gate_mode ---------------------------------------------------------------------

def test_lad_uniform_gates_by_hand():
    L, n, mu, S, d = 4, 2, 5.0, 5, 8
    args = args_for(gate_mode="uniform", mu=mu, num_hidden_layers=n)
    objective = GatedObjective(args, lad_targets(L, n), CPU, CPU, d, S)
    assert list(objective.parameters()) == []
    torch.manual_seed(9)
    teacher = outputs(torch.randn(2, 3), [torch.randn(2, S, d) * 3 + 1 for _ in range(L + 1)])
    student = outputs(torch.randn(2, 3), [torch.randn(2, S, d) for _ in range(n + 1)], grad=True)
    terms = hidden_only(objective(student, teacher, LABELS))

    H = [h.double() for h in teacher.hidden_states[1:]]
    A = [H[0]]
    for i in range(1, L):
        x = 0.5 * H[i] + 0.5 * A[-1]
        normed = torch.empty_like(x)
        for b in range(x.shape[0]):
            mean = x[b].sum() / (S * d)
            var = ((x[b] - mean) ** 2).sum() / (S * d)
            normed[b] = (x[b] - mean) / math.sqrt(var + 1e-5)
        A.append(normed)
    k = L // n
    assert terms.keys() == {"hidden_1", "hidden_2"}
    for j in (1, 2):
        expected = mu / n * mse(student.hidden_states[j], A[j * k - 1])
        torch.testing.assert_close(terms[f"hidden_{j}"].double(), expected, **TOL)

    statistics = objective.statistics()
    assert statistics["gate_z"].tolist() == [0.5] * (L - 1)
    assert statistics["gate_z_square"].tolist() == [0.0] * (L - 1)


def test_lad_frozen_gates_train_nothing():
    args = args_for(gate_mode="frozen", mu=5.0, num_hidden_layers=2)
    objective = GatedObjective(args, lad_targets(4, 2), CPU, CPU, 8, 5)
    parameters = list(objective.parameters())
    assert len(parameters) == 3 * 2 * 2  # three gates: a Linear and a LayerNorm, weight and bias
    assert not any(p.requires_grad for p in parameters)


# ---- the two-stage schedule --------------------------------------------------------------

def settings(**changes):
    values = dict(lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=1.0,
                  total_step=100, warmup_step=10)
    return OptimizerSettings(**(values | changes))


def test_two_stage_schedule_by_hand():
    schedule = settings(restart_step=30).schedule
    # first stage: steps 0..29, warmup round(10 * 30 / 100) = 3, decay to 0 at 30
    # second stage: steps 30..100, warmup 10 - 3 = 7, decay over 70 - 7 = 63 steps
    by_hand = {0: 0.0, 1: 1 / 3, 2: 2 / 3, 3: 1.0, 16: 14 / 27, 29: 1 / 27,
               30: 0.0, 31: 1 / 7, 33: 3 / 7, 37: 1.0, 50: 50 / 63, 99: 1 / 63, 100: 0.0}
    for step, factor in by_hand.items():
        assert schedule(step) == pytest.approx(factor, abs=1e-12), step


def test_no_restart_is_transformers_linear_schedule():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, 10, 100).lr_lambdas[0]
    schedule = settings(restart_step=0).schedule
    for step in range(0, 103):
        assert schedule(step) == pytest.approx(reference(step), abs=1e-12), step
