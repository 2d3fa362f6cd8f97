"""Pieces of the shared training loop."""
import argparse

import pytest
import torch
from torch import nn

from fine_tune.data import load_tokenized
from fine_tune.errors import Interrupted
from fine_tune.experiment import Experiment
from fine_tune.glue import MNLI
from fine_tune.modeling import load_pretrained_classifier, load_tokenizer
from fine_tune.training import (BatchOrder, FineTuning, OptimizerSettings, TrainableGroup,
                                TrainingRun, accumulate_gradients, train)


def test_batch_order_visits_every_example_once_per_epoch():
    order = BatchOrder(num_examples=10, batch_size=4, seed=3)
    epochs = [[order.next_batch() for _ in range(3)] for _ in range(2)]
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 2]  # the last batch of an epoch is smaller
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))  # reshuffled
    again = BatchOrder(10, 4, seed=3)
    assert torch.equal(again.next_batch(), epochs[0][0])
    assert not torch.equal(BatchOrder(10, 4, seed=4).next_batch(), epochs[0][0])


def test_batch_order_state_continues_the_same_sequence():
    order = BatchOrder(10, 4, seed=0)
    for _ in range(4):
        order.next_batch()
    resumed = BatchOrder(10, 4, seed=0)
    resumed.load_state_dict(order.state_dict())
    for _ in range(5):
        assert torch.equal(order.next_batch(), resumed.next_batch())


def test_group_by_length_sorts_runs_of_50_batches_and_keeps_the_state_small():
    from fine_tune.training.order import GROUPED_BATCHES
    lengths = torch.randint(5, 120, (1003,), generator=torch.Generator().manual_seed(0)).short()
    grouped, plain = BatchOrder(1003, 4, seed=3, lengths=lengths), BatchOrder(1003, 4, seed=3)
    for epoch in range(2):
        batches = [grouped.next_batch() for _ in range(251)]  # 250 full batches and one of 3
        assert [len(b) for b in batches[-2:]] == [4, 3]
        rows = torch.cat(batches)
        assert sorted(rows.tolist()) == list(range(1003))  # each row once per epoch
        shuffled = torch.cat([plain.next_batch() for _ in range(251)])
        for start in range(0, 1003, GROUPED_BATCHES * 4):  # each run: the shuffle's rows, sorted
            run, same = rows[start:start + 200], shuffled[start:start + 200]
            assert sorted(run.tolist()) == sorted(same.tolist())
            assert torch.all(lengths[run][:-1] >= lengths[run][1:])
    # batches cut to their longest row carry far less padding
    width = lambda order: sum(int(lengths[order.next_batch()].max()) for _ in range(250))  # noqa: E731
    assert width(BatchOrder(1003, 4, 0, lengths)) < 0.8 * width(BatchOrder(1003, 4, 0))
    resumed = BatchOrder(1003, 4, seed=3, lengths=lengths)
    resumed.load_state_dict(grouped.state_dict())
    for _ in range(300):  # across the epoch's end
        assert torch.equal(grouped.next_batch(), resumed.next_batch())


def test_no_weight_decay_on_biases_and_layer_norm():
    module = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    settings = OptimizerSettings(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5,
                                 max_norm=1.0, total_step=10, warmup_step=2)
    group = TrainableGroup("model", module, settings)
    decayed, plain = group.optimizer.param_groups
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(module[0].weight), id(module[2].weight)}
    assert {id(p) for p in plain["params"]} == {id(module[0].bias), id(module[1].weight),
                                                id(module[1].bias)}


def test_gate_settings_fall_back_to_the_model_schedule():
    args = argparse.Namespace(lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                              max_norm=1.0, total_step=100, warmup_step=10, gate_lr=5e-7,
                              gate_beta1=0.8, gate_beta2=0.99, gate_eps=1e-6, gate_weight_decay=0.0,
                              gate_max_norm=2.0, gate_total_step=None, gate_warmup_step=None)
    gate = OptimizerSettings.from_args(args, "gate_")
    assert (gate.lr, gate.beta1, gate.max_norm, gate.weight_decay) == (5e-7, 0.8, 2.0, 0.0)
    assert (gate.total_step, gate.warmup_step) == (100, 10)


def model_and_data(workdir, max_seq_len, dropout=0.0):
    """The tiny BERT with a seeded head, and the fixture's train split."""
    torch.manual_seed(0)
    model = load_pretrained_classifier(str(workdir / "tiny-bert"), MNLI, dropout=dropout)
    data = load_tokenized(workdir / "data" / "fine_tune", "mnli", "train",
                          load_tokenizer(workdir / "tiny-bert"), max_seq_len, show_progress=False)
    return model, data


def test_gradient_accumulation_gives_the_full_batch_gradient(workdir):
    """--accum_step only splits the batch: the gradient is the full batch's (dropout off)."""
    model, data = model_and_data(workdir, max_seq_len=32)
    run = TrainingRun(None, None, model, torch.device("cpu"), FineTuning(), data)
    rows = torch.arange(10)  # 10 examples in 4 micro-batches of unequal sizes (3, 3, 2, 2)
    results = []
    for accum_step in (1, 4):
        model.zero_grad()
        terms = accumulate_gradients(run, rows, accum_step)
        results.append((float(terms["ce"]), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full_loss, full_grads), (split_loss, split_grads) = results
    assert split_loss == pytest.approx(full_loss, rel=1e-5)
    expected = nn.functional.cross_entropy(model(**{k: v for k, v in data.batch(rows).items()
                                                    if k != "labels"}).logits, data.labels[rows])
    assert full_loss == pytest.approx(float(expected.detach()), rel=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert full_grads["classifier.weight"].abs().sum() > 0


def test_training_writes_checkpoints_that_differ_from_the_start(workdir):
    args = argparse.Namespace(batch_size=8, accum_step=2, lr=1e-3, beta1=0.9, beta2=0.999,
                              eps=1e-8, weight_decay=0.01, max_norm=1.0, total_step=3,
                              warmup_step=1, log_step=2, ckpt_step=2, seed=0)
    torch.manual_seed(0)
    model = load_pretrained_classifier(str(workdir / "tiny-bert"), MNLI, dropout=0.1)
    start = model.classifier.weight.detach().clone()
    data = load_tokenized(workdir / "data" / "fine_tune", "mnli", "train",
                          load_tokenizer(workdir / "tiny-bert"), 32, show_progress=False)
    experiment = Experiment(workdir / "exp", "unit", "bert", "mnli")
    with experiment.training({"total_step": 3}, overwrite=False):
        train(TrainingRun(args, experiment, model, torch.device("cpu"), FineTuning(), data))
    assert experiment.checkpoint_steps() == [2, 3]
    final = experiment.load_checkpoint(3)
    assert torch.equal(final["classifier.weight"], model.classifier.weight)
    assert not torch.equal(final["classifier.weight"], start)
    assert not torch.equal(experiment.load_checkpoint(2)["classifier.weight"], final["classifier.weight"])


def _optimiser_steps(fused: bool, monkeypatch, steps=3):
    """`steps` AdamW steps (two decay groups, clipping, warmup schedule) of a small module
    under seeded gradients, with the fused kernel or PyTorch's for-loop AdamW."""
    from fine_tune.training import optim
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 3))
    settings = OptimizerSettings(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                                 max_norm=1.0, total_step=10, warmup_step=2)
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(optim, "fused_kernels", lambda params: None)  # the old choice on a CPU
        group = TrainableGroup("model", module, settings)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in module.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        group.step()
    return module, group


def test_fused_adamw_on_the_cpu_equals_the_for_loop_adamw(monkeypatch):
    fused, fused_group = _optimiser_steps(True, monkeypatch)
    loop, loop_group = _optimiser_steps(False, monkeypatch)
    assert all(g["fused"] for g in fused_group.optimizer.param_groups)
    assert not any(g["fused"] for g in loop_group.optimizer.param_groups)
    start = _optimiser_steps(True, monkeypatch, steps=0)[0]
    for a, b, s in zip(fused.parameters(), loop.parameters(), start.parameters()):
        assert not torch.equal(a, s)  # the steps moved the weights
        assert (a - b).abs().max() < 1e-6


def test_an_experiment_saved_with_the_for_loop_optimiser_resumes_fused(workdir, monkeypatch):
    """train_state.pt written before AdamW was fused on the CPU (fused: None, step counts as
    CPU scalars) resumes with the fused kernel, and ends where an uninterrupted run of the
    old optimiser ends, within 1e-6."""
    from fine_tune.training import optim
    args = argparse.Namespace(batch_size=8, accum_step=1, lr=1e-3, beta1=0.9, beta2=0.999,
                              eps=1e-8, weight_decay=0.01, max_norm=1.0, total_step=4,
                              warmup_step=1, log_step=2, ckpt_step=2, seed=0, resume=False)
    data = model_and_data(workdir, 32)[1]

    def run(name, resume, fused, stop_before=None):
        model = model_and_data(workdir, 32)[0]
        experiment = Experiment(workdir / "exp", name, "bert", "mnli")
        step, count = optim.TrainableGroup.step, [0]

        def stopping_step(group):  # Ctrl-C before update `stop_before`
            count[0] += 1
            if count[0] == stop_before:
                raise KeyboardInterrupt
            step(group)
        with monkeypatch.context() as patch:
            patch.setattr(optim.TrainableGroup, "step", stopping_step)
            if not fused:
                patch.setattr(optim, "fused_kernels", lambda params: None)
            config = {"task": "mnli", "max_seq_len": 32, "num_class": 3, "total_step": 4,
                      "ptrain_ver": str(workdir / "tiny-bert")}
            with experiment.training(config, overwrite=False, resume=resume):
                try:
                    train(TrainingRun(argparse.Namespace(**vars(args) | {"resume": resume}),
                                      experiment, model, torch.device("cpu"), FineTuning(), data))
                except Interrupted:
                    assert stop_before is not None
        return experiment

    old = run("old", False, fused=False)
    resumed = run("resumed", False, fused=False, stop_before=3)  # killed after step 2's save
    saved = torch.load(resumed.path / "train_state.pt", weights_only=False)
    assert not any(g["fused"] for g in saved["optimizers"]["model"]["param_groups"])
    assert resumed.checkpoint_steps() == [2]
    run("resumed", True, fused=True)
    state = torch.load(resumed.path / "train_state.pt", weights_only=False)
    assert all(g["fused"] for g in state["optimizers"]["model"]["param_groups"])
    expected, got = old.load_checkpoint(4), resumed.load_checkpoint(4)
    assert not torch.equal(got["classifier.weight"], resumed.load_checkpoint(2)["classifier.weight"])
    for name in expected:
        assert (got[name] - expected[name]).abs().max() < 1e-6, name


def test_dynamic_padding_gives_the_same_loss_and_gradients(workdir):
    """Cutting padding is exact for the teacher's loss (padding is masked)."""
    model, data = model_and_data(workdir, max_seq_len=128)
    results = []
    for dynamic in (False, True):
        run = TrainingRun(argparse.Namespace(dynamic_padding=dynamic), None, model,
                          torch.device("cpu"), FineTuning(), data)
        model.zero_grad()
        terms = accumulate_gradients(run, torch.arange(8), 2)
        results.append((float(terms["ce"]), [p.grad.clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for full, cut in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(cut, full, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_the_forward_in_bf16_and_the_loss_in_fp32(workdir):
    model, data = model_and_data(workdir, max_seq_len=32)
    seen = []
    model.classifier.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    losses = {}
    for amp in ("fp32", "bf16"):
        run = TrainingRun(argparse.Namespace(amp=amp), None, model, torch.device("cpu"),
                          FineTuning(), data)
        terms = accumulate_gradients(run, torch.arange(8), 1)
        assert terms["ce"].dtype == torch.float32
        losses[amp] = float(terms["ce"])
    assert seen == [torch.float32, torch.bfloat16]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_a_batch_smaller_than_accum_step_has_no_empty_micro_batches(workdir):
    """The last batch of an epoch can be shorter than --accum_step."""
    model, data = model_and_data(workdir, max_seq_len=32)
    for dynamic in (False, True):
        run = TrainingRun(argparse.Namespace(dynamic_padding=dynamic), None, model,
                          torch.device("cpu"), FineTuning(), data)
        model.zero_grad()
        terms = accumulate_gradients(run, torch.arange(3), 8)
        expected = nn.functional.cross_entropy(
            model(**{k: v for k, v in data.batch(torch.arange(3)).items() if k != "labels"}).logits,
            data.labels[:3])
        assert float(terms["ce"]) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_gate_warmup_is_checked_against_the_schedule_it_falls_back_to():
    from fine_tune.errors import UserError
    from fine_tune.training import check_training_args
    args = argparse.Namespace(task="mnli", dataset="train", num_class=3, batch_size=32, accum_step=1, lr=1e-4,
                              beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, max_norm=1.0,
                              total_step=100, warmup_step=10, gate_lr=1e-6, gate_beta1=0.9,
                              gate_beta2=0.999, gate_eps=1e-8, gate_weight_decay=0.0,
                              gate_max_norm=1.0, gate_total_step=None, gate_warmup_step=200)
    with pytest.raises(UserError, match="--gate_warmup_step 200 is larger than --gate_total_step 100"):
        check_training_args(args)
    args.gate_warmup_step = 50
    check_training_args(args)


def test_training_step_has_no_host_synchronising_ops(workdir):
    """Our step hands BERT a prepared 4D mask, so transformers does not call .all() on it
    (a GPU-to-host sync per forward), and the loss is the one of the 2D mask."""
    from torch.profiler import ProfilerActivity, profile

    from fine_tune.modeling import prepared_attention_mask
    model, data = model_and_data(workdir, max_seq_len=32)
    batch = {k: v for k, v in data.batch(torch.arange(4)).items() if k != "labels"}
    with torch.no_grad():
        plain = model(**batch).logits
        prepared = model(**prepared_attention_mask(batch)).logits
    torch.testing.assert_close(prepared, plain, rtol=0, atol=1e-6)
    assert data.lengths[:4].min() < 32  # the rows really are padded

    run = TrainingRun(None, None, model, torch.device("cpu"), FineTuning(), data)
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        accumulate_gradients(run, torch.arange(8), 2)
    ops = {event.key for event in trace.key_averages()}
    assert not ops & {"aten::item", "aten::is_nonzero", "aten::_local_scalar_dense"}, ops


def test_cpu_evaluation_passes_at_most_32_rows_with_the_same_logits(workdir):
    """--batch_size 512 on the CPU: forward passes of at most 32 rows (faster there), the
    logits those of small batches up to float rounding."""
    from fine_tune.evaluation import CPU_ROWS_PER_PASS, predict
    model, data = model_and_data(workdir, max_seq_len=32)
    sizes = []
    hook = model.register_forward_hook(lambda module, args, kwargs, out: sizes.append(
        len(kwargs["input_ids"])), with_kwargs=True)
    large = predict(model, data, 512, torch.device("cpu"))
    hook.remove()
    assert CPU_ROWS_PER_PASS == 32 and len(data) > 32
    assert max(sizes) == 32 and sum(sizes) == len(data)
    small = predict(model, data, 5, torch.device("cpu"))
    assert abs(large - small).max() < 1e-5
