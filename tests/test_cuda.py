"""The CUDA paths: device placement, fused AdamW, bf16 autocast, no host sync in a step.

Skipped where torch sees no GPU (this project's CPU machines and CI). Run them on a GPU
machine with `python -m pytest -q tests/test_cuda.py`.
"""
import argparse
import json

import pandas as pd
import pytest
import torch

from conftest import flags, run_script, seed_flags
from test_distillation_e2e import LAD, SMALL, teacher_workdir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = dict(device_id=0, tdevice_id=0, gate_device_id=0)


@pytest.fixture(scope="module")
def work(assets, deep_bert, tmp_path_factory):
    """A 12-layer tiny teacher fine-tuned on the GPU in bf16 by the seed's command."""
    return teacher_workdir(assets, deep_bert, tmp_path_factory.mktemp("cuda"), 0, "--amp", "bf16")


def test_seed_lad_command_trains_on_the_gpu_in_bf16(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU), "--amp", "bf16", cwd=work)
    folder = work / "exp" / "LAD_soft_4_6_bert_mnli"
    config = json.loads((folder / "config.json").read_text())
    assert (config["device_id"], config["tdevice_id"], config["gate_device_id"], config["amp"]) == \
        (0, 0, 0, "bf16")
    state = torch.load(folder / "model-5.pt", weights_only=True)  # no map_location
    assert all(t.device.type == "cpu" and t.dtype != torch.bfloat16 for t in state.values())
    assert torch.load(folder / "gate-5.pt", weights_only=True)["gates.0.linear.weight"].isfinite().all()


def test_gpu_and_cpu_evaluation_agree(work):
    """fp32 evaluation of the same checkpoints on the GPU and on the CPU."""
    accuracies = {}
    for device in ("0", "-1"):
        run_script("run_fine_tune_eval.py", *flags(
            "--experiment teacher_base --model bert --task mnli --dataset dev_matched "
            f"--batch_size 512 --device_id {device}"), cwd=work)
        results = pd.read_csv(work / "exp" / "teacher_base_bert_mnli" / "results_dev_matched.csv")
        accuracies[device] = results["accuracy"].tolist()
    # TF32/cuBLAS rounding may flip an example whose logits nearly tie, not more.
    assert all(abs(g - c) <= 1 / 60 + 1e-9 for g, c in zip(accuracies["0"], accuracies["-1"]))


def test_teacher_on_the_cpu_student_and_gates_on_the_gpu(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU | dict(
        tdevice_id=-1, experiment="LAD_mixed")), "--eval_during_training", "dev_matched",
        "--keep_checkpoints", "1", cwd=work)
    folder = work / "exp" / "LAD_mixed_bert_mnli"
    assert (folder / "model-5.pt").is_file()
    results = pd.read_csv(folder / "results_dev_matched.csv")
    assert set(results["device"]) == {"cuda:0"} and results["accuracy"].between(0, 1).all()


def test_a_cuda_training_step_is_fused_in_bf16_and_never_waits_for_the_host(work):
    from fine_tune.data import load_tokenized
    from fine_tune.distillation import load_teacher
    from fine_tune.lad import GatedObjective, lad_targets
    from fine_tune.modeling import build_classifier, load_tokenizer
    from fine_tune.trainer import TrainingRun, make_groups, training_step

    cuda = torch.device("cuda", 0)
    args = argparse.Namespace(
        exp_dir=work / "exp", teacher_exp="teacher_base", tmodel="bert", task="mnli", tckpt=4,
        hard_weight=0.5, soft_weight=0.5, softmax_temp=10.0, mu=500.0, amp="bf16",
        lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=1.0,
        total_step=10, warmup_step=1, gate_lr=1e-6, gate_beta1=None, gate_beta2=None,
        gate_eps=None, gate_weight_decay=None, gate_max_norm=None, gate_total_step=None,
        gate_warmup_step=None)
    experiment, teacher, _ = load_teacher(args)
    student = build_classifier(teacher.config.to_dict() | {"num_hidden_layers": 6}).to(cuda)
    objective = GatedObjective(args, lad_targets(12, 6), cuda, cuda, 32, 128)
    data = load_tokenized(work / "data" / "fine_tune", "mnli", "train",
                          load_tokenizer(experiment.path / "tokenizer"), 128)
    run = TrainingRun(args, None, student, cuda, objective, data, teacher.to(cuda), cuda)
    groups = make_groups(run)
    assert all(g.optimizer.defaults["fused"] for g in groups)
    training_step(run, groups, torch.arange(8), 1)  # warm-up: first calls may allocate and sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    statistics = {}  # the gates' mean z, summed on the device as the losses are
    try:
        terms = training_step(run, groups, torch.arange(8, 16), 2, statistics)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(t.dtype == torch.float32 and t.device == cuda for t in terms.values())
    assert len(statistics) == 11 and all(t.device == cuda for t in statistics.values())
    assert all(bool(t.isfinite()) for t in terms.values())
    assert all(p.dtype == torch.float32 for p in student.parameters())


def test_a_device_left_out_is_gpu_0_and_said(work):
    result = run_script("run_fine_tune_eval.py", *flags(
        "--experiment teacher_base --model bert --task mnli --dataset dev_matched"), cwd=work)
    assert "--device_id not given: running on GPU 0 (" in result.stdout
    result = run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | dict(
        experiment="LAD_default_device", device_id=None, tdevice_id=None, gate_device_id=None)),
        cwd=work)
    config = json.loads((work / "exp" / "LAD_default_device_bert_mnli" / "config.json").read_text())
    assert (config["device_id"], config["tdevice_id"], config["gate_device_id"]) == (0, 0, 0)
