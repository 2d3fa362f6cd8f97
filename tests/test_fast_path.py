"""The lean GPU path, checked on the CPU: the frozen teacher in bf16 weights, all gates
clipped in one pass, only the needed teacher states moved, --compile and --tf32."""
import argparse
import copy

import pytest
import torch
from torch import nn

from conftest import flags
from fine_tune import cli
from fine_tune.alp import ALPObjective
from fine_tune.lad import GatedObjective, lad_targets, partial_lad_targets
from fine_tune.modeling import build_classifier, prepared_attention_mask
from fine_tune.settings import Settings
from fine_tune.training import (OptimizerSettings, TrainableGroup, TrainingRun,
                                accumulate_gradients, make_groups, training_step)
from fine_tune.training.loop import loss_terms
from test_trainer import model_and_data

CPU = torch.device("cpu")
LOSS = dict(mu=500.0, hard_weight=0.5, soft_weight=0.5, softmax_temp=10.0, task="mnli",
            lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=1.0,
            total_step=10, warmup_step=0, gate_lr=1e-3, gate_beta1=None, gate_beta2=None,
            gate_eps=None, gate_weight_decay=None, gate_max_norm=None, gate_total_step=None,
            gate_warmup_step=None, num_hidden_layers=2)


def lad_run(workdir, amp):
    """A 4-layer teacher, a 2-layer student and LAD's 3 gates, dropout off."""
    teacher, data = model_and_data(workdir, max_seq_len=32)
    teacher.requires_grad_(False).eval()
    torch.manual_seed(1)
    student = build_classifier(teacher.config.to_dict() | {"num_hidden_layers": 2,
                                                           "hidden_dropout_prob": 0.0,
                                                           "attention_probs_dropout_prob": 0.0})
    args = argparse.Namespace(amp=amp, **LOSS)
    objective = GatedObjective(args, lad_targets(4, 2), CPU, CPU, 32, 32)
    return TrainingRun(args, None, student, CPU, objective, data, teacher, CPU), data


def test_bf16_teacher_weights_give_the_autocast_losses(workdir):
    """Under --amp bf16 the teacher's Linears are cast to bf16 once and it runs without
    autocast; its losses equal the old path's (fp32 weights under autocast) bitwise on the
    CPU (see tests/test_bf16_teacher.py)."""
    run, data = lad_run(workdir, "bf16")
    reference_teacher, _ = model_and_data(workdir, max_seq_len=32)  # the same fp32 teacher
    reference_teacher.requires_grad_(False).eval()
    linear = {id(p) for m in run.teacher.modules() if isinstance(m, nn.Linear) for p in m.parameters()}
    assert all(p.dtype == (torch.bfloat16 if id(p) in linear else torch.float32)
               for p in run.teacher.parameters())  # LayerNorms and embeddings stay fp32
    rows = torch.arange(8)
    with torch.no_grad():
        terms = loss_terms(run, rows)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inputs = prepared_attention_mask({k: v for k, v in data.batch(rows).items() if k != "labels"})
        student_out = run.model(**inputs, output_hidden_states=True)
        teacher_out = reference_teacher(**inputs, output_hidden_states=True)
        expected = run.objective(student_out, teacher_out, data.labels[rows])
    assert terms.keys() == expected.keys() and all(t.dtype == torch.float32 for t in terms.values())
    for name in terms:
        assert terms[name].item() == expected[name].item(), name


def test_all_gates_clipped_at_once_as_each_on_its_own():
    torch.manual_seed(0)
    gates = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))
    units = [list(g.parameters()) for g in gates]
    settings = OptimizerSettings(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                                 max_norm=1.0, total_step=10, warmup_step=0)
    group = TrainableGroup("gate", gates, settings, units)
    scales = [0.01, 0.5, 3.0, 10.0, 100.0]  # some gates under the limit, some over
    for gate, scale in zip(gates, scales):
        for p in gate.parameters():
            p.grad = torch.randn_like(p) * scale
    reference = copy.deepcopy(gates)
    for mine, theirs in zip(gates.parameters(), reference.parameters()):
        theirs.grad = mine.grad.clone()
    norms = [nn.utils.clip_grad_norm_(gate.parameters(), 1.0) for gate in reference]
    expected = [[p.grad for p in gate.parameters()] for gate in reference]
    norm = group._clip_each_unit()
    for unit, clipped in zip(units, expected):
        for p, grad in zip(unit, clipped):
            torch.testing.assert_close(p.grad, grad, rtol=1e-6, atol=1e-7)
    assert float(norm) == pytest.approx(float(torch.linalg.vector_norm(torch.stack(norms))), rel=1e-6)
    assert float(torch.linalg.vector_norm(torch.cat([g.grad.reshape(-1) for g in gates[3].parameters()]))) \
        == pytest.approx(1.0, rel=1e-5)  # a gate over the limit is clipped to it
    torch.testing.assert_close(gates[0].weight.grad, expected[0][0])  # one under it is not


def test_only_the_teacher_states_a_target_needs_are_moved(monkeypatch):
    """Partial LAD gated up to H_4 with raw H_6: H_5 is never moved; ALP's alp-kd moves
    [CLS] rows only."""
    moved = []
    monkeypatch.setattr("fine_tune.lad.move", lambda t, device: moved.append(t.shape) or t)
    args = argparse.Namespace(**LOSS | {"num_hidden_layers": 3})
    objective = GatedObjective(args, partial_lad_targets(6, 3, [2, 4], [1, 2, 3]), CPU, CPU, 8, 5)
    assert objective.needed == {1, 2, 3, 4, 6}
    objective.hidden_terms([torch.randn(2, 5, 8) for _ in range(3)], [torch.randn(2, 5, 8)] * 6)
    assert len(moved) == 5
    shapes = []
    monkeypatch.setattr("fine_tune.alp.move", lambda t, device: shapes.append(t.shape) or t)
    alp = ALPObjective(argparse.Namespace(**LOSS | {"alp_exp": "alp-kd"}), 4, CPU)
    alp.hidden_terms([torch.randn(2, 5, 8) for _ in range(2)], [torch.randn(2, 5, 8)] * 4)
    assert shapes == [torch.Size([2, 8])] * 4


def test_a_bf16_lad_step_still_trains_and_logs(workdir):
    run, _ = lad_run(workdir, "bf16")
    groups = make_groups(run)
    before = [p.detach().clone() for p in run.objective.parameters()]
    statistics = {}
    terms = training_step(run, groups, torch.arange(8), 2, statistics)
    assert all(torch.isfinite(t) for t in terms.values())
    assert all(statistics[tag].shape == (3,) and statistics[tag].dtype == torch.float32
               for tag in ("gate_z", "gate_z_square"))
    assert any(not torch.equal(a, b) for a, b in zip(before, run.objective.parameters()))


@pytest.mark.slow
def test_compiled_training_and_evaluation_equal_eager(workdir, monkeypatch):
    """--compile (inductor, on the CPU here) changes the kernels, not the results (with
    gradient accumulation, whose micro-batches need no DDP no_sync in one process)."""
    from fine_tune.demo_data import demo_texts, write_tiny_bert
    from fine_tune.evaluation import evaluate_checkpoints
    from fine_tune.teacher import fine_tune_teacher
    monkeypatch.chdir(workdir)
    # One layer: compiling takes most of this test (a 4-layer BERT: 36 s on one core, 26 s).
    write_tiny_bert(workdir / "one-layer-bert", demo_texts(workdir / "data" / "fine_tune"),
                    hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                    max_position_embeddings=128)
    teacher = ("--ptrain_ver one-layer-bert --batch_size 8 --accum_step 2 --ckpt_step 3 --log_step 3 "
               "--lr 1e-3 --max_seq_len 32 --device_id -1 --total_step 3 --warmup_step 1 --dropout 0")
    results = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        fine_tune_teacher(Settings(**vars(cli.teacher_parser().parse_args(
            flags(teacher) + ["--experiment", name] + extra))))
        results[name] = evaluate_checkpoints(Settings(**vars(cli.eval_parser().parse_args(
            flags(f"--experiment {name} --dataset dev_matched --device_id -1") + extra))))
    eager = torch.load(workdir / "exp" / "eager_bert_mnli" / "model-3.pt", weights_only=True)
    fast = torch.load(workdir / "exp" / "compiled_bert_mnli" / "model-3.pt", weights_only=True)
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)
    assert results["compiled"]["accuracy"].tolist() == results["eager"]["accuracy"].tolist()


def test_tf32_flag_turns_on_tf32_matmuls():
    from fine_tune.modeling import set_matmul_precision
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        set_matmul_precision(argparse.Namespace(tf32=False))
        assert not torch.backends.cuda.matmul.allow_tf32  # fp32 stays full fp32
        set_matmul_precision(argparse.Namespace(tf32=True))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_bf16_weight_copies_give_autocasts_gradients(workdir):
    """The bf16 copies of the Linear weights (Bf16Linears) replace autocast's casts and
    leave the step's loss and gradients as they were, micro-batches included."""
    results = []
    for copies in (True, False):
        run, _ = lad_run(workdir, "bf16")
        assert set(run.bf16_linears) == {"model", "objective"}
        if not copies:
            run.bf16_linears = {}  # autocast casts every weight, as before
        terms = accumulate_gradients(run, torch.arange(8), 2)
        grads = {name: p.grad.clone() for module in (run.model, run.objective)
                 for name, p in module.named_parameters()}
        results.append(({k: v.item() for k, v in terms.items()}, grads))
    (terms, grads), (reference_terms, reference_grads) = results
    assert terms == reference_terms
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=0, atol=0, msg=name)
