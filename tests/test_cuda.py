"""The CUDA paths: device placement, fused AdamW, bf16 autocast, no host sync in a step.

Skipped where torch sees no GPU (this project's CPU machines and CI). Run them on a GPU
machine with `python -m pytest -q tests/test_cuda.py` (bench/gpu_check.sh does). With
TEST_CUDA_ON_CPU=1 the tests that only place work on a device run on the CPU instead: a
dry run of this file's own logic, for machines without a GPU.
"""
import argparse
import json
import os

import pandas as pd
import pytest
import torch

from conftest import flags, run_script, seed_flags
from test_distillation_e2e import GATE_FLAGS, LAD, SMALL, STUDENTS, teacher_workdir
from test_resume import run_hooked

DRY = os.environ.get("TEST_CUDA_ON_CPU") == "1" and not torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or DRY), reason="needs a CUDA GPU")
needs_cuda = pytest.mark.skipif(DRY, reason="checks CUDA itself (not in a dry run on the CPU)")

GPU = dict(device_id=-1 if DRY else 0, tdevice_id=-1 if DRY else 0, gate_device_id=-1 if DRY else 0)


@pytest.fixture(scope="module")
def work(assets, deep_bert, tmp_path_factory):
    """A 12-layer tiny teacher fine-tuned on the GPU in bf16 by the seed's command."""
    return teacher_workdir(assets, deep_bert, tmp_path_factory.mktemp("cuda"), GPU["device_id"],
                           "--amp", "bf16")


@needs_cuda
def test_seed_lad_command_trains_on_the_gpu_in_bf16(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU), "--amp", "bf16", cwd=work)
    folder = work / "exp" / "LAD_soft_4_6_bert_mnli"
    config = json.loads((folder / "config.json").read_text())
    assert (config["device_id"], config["tdevice_id"], config["gate_device_id"], config["amp"]) == \
        (0, 0, 0, "bf16")
    state = torch.load(folder / "model-5.pt", weights_only=True)  # no map_location
    assert all(t.device.type == "cpu" and t.dtype != torch.bfloat16 for t in state.values())
    assert torch.load(folder / "gate-5.pt", weights_only=True)["gates.0.linear.weight"].isfinite().all()


@needs_cuda
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


@needs_cuda
def test_teacher_on_the_cpu_student_and_gates_on_the_gpu(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU | dict(
        tdevice_id=-1, experiment="LAD_mixed")), "--eval_during_training", "dev_matched",
        "--keep_checkpoints", "1", cwd=work)
    folder = work / "exp" / "LAD_mixed_bert_mnli"
    assert (folder / "model-5.pt").is_file()
    results = pd.read_csv(folder / "results_dev_matched.csv")
    assert set(results["device"]) == {"cuda:0"} and results["accuracy"].between(0, 1).all()


@needs_cuda
def test_a_cuda_training_step_is_fused_in_bf16_and_never_waits_for_the_host(work):
    from fine_tune.data import load_tokenized
    from fine_tune.distillation import load_teacher
    from fine_tune.lad import GatedObjective, lad_targets
    from fine_tune.modeling import build_classifier, load_tokenizer
    from fine_tune.training import TrainingRun, make_groups, training_step

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
    statistics = {}  # the gates' mean z and mean (z - 1/2)^2, summed on the device as the losses are
    try:
        terms = training_step(run, groups, torch.arange(8, 16), 2, statistics)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(t.dtype == torch.float32 and t.device == cuda for t in terms.values())
    assert set(statistics) == {"gate_z", "gate_z_square"}  # one vector each: 11 gates
    assert all(t.shape == (11,) and t.dtype == torch.float32 and t.device == cuda
               for t in statistics.values())
    assert all(bool(t.isfinite()) for t in terms.values())
    assert all(p.dtype == torch.float32 for p in student.parameters())


@needs_cuda
def test_a_device_left_out_is_gpu_0_and_said(work):
    result = run_script("run_fine_tune_eval.py", *flags(
        "--experiment teacher_base --model bert --task mnli --dataset dev_matched"), cwd=work)
    assert "--device_id not given: running on GPU 0 (" in result.stdout
    result = run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | dict(
        experiment="LAD_default_device", device_id=None, tdevice_id=None, gate_device_id=None)),
        cwd=work)
    config = json.loads((work / "exp" / "LAD_default_device_bert_mnli" / "config.json").read_text())
    assert (config["device_id"], config["tdevice_id"], config["gate_device_id"]) == (0, 0, 0)


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
@pytest.mark.parametrize("experiment", STUDENTS)
def test_every_method_trains_on_the_gpu(work, experiment, amp):
    """Each of the seed's distillation commands on GPU 0, in fp32 and in bf16 (the bf16
    teacher and the student's bf16 weight copies included)."""
    script, command, gates = STUDENTS[experiment]
    small = {k: v for k, v in (SMALL | GPU).items() if gates or k not in GATE_FLAGS}
    name = f"{experiment}_{amp}"
    run_script(script, *seed_flags(command, **small, experiment=name), "--amp", amp, cwd=work)
    folder = work / "exp" / f"{name}_bert_mnli"
    state = torch.load(folder / "model-5.pt", weights_only=True)
    assert all(t.dtype != torch.bfloat16 and t.isfinite().all() for t in state.values())
    log = pd.read_csv(folder / "train_log.csv")
    assert log["loss/total"].notna().all() and (log["loss/total"] > 0).all()


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gates_on_a_second_gpu(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU | dict(
        gate_device_id=1, experiment="LAD_gates_on_1")), "--amp", "bf16", cwd=work)
    config = json.loads((work / "exp" / "LAD_gates_on_1_bert_mnli" / "config.json").read_text())
    assert (config["device_id"], config["gate_device_id"]) == (0, 1)


def test_a_killed_gpu_run_resumes(work):
    """SIGKILL after step 3 of 5, then --resume: it ends at step 5 and close to an
    uninterrupted run (cuBLAS is not bitwise deterministic, so not equal)."""
    lad = seed_flags(LAD, **SMALL | GPU | dict(experiment="LAD_killed"))
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU | dict(experiment="LAD_whole")),
               cwd=work)
    killed = run_hooked("kill_after_step", 3, "run_lad_distil.py", lad, work, fork=False)
    assert killed.returncode == -9
    resumed = run_script("run_lad_distil.py", *lad, "--resume", cwd=work)
    assert "resuming LAD_killed_bert_mnli from step 2" in resumed.stdout
    a = torch.load(work / "exp" / "LAD_whole_bert_mnli" / "model-5.pt", weights_only=True)
    b = torch.load(work / "exp" / "LAD_killed_bert_mnli" / "model-5.pt", weights_only=True)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3


def test_compiled_training_step_on_the_gpu(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | GPU | dict(experiment="LAD_compiled")),
               "--amp", "bf16", "--compile", cwd=work)
    assert (work / "exp" / "LAD_compiled_bert_mnli" / "model-5.pt").is_file()


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
def test_unpadded_forward_on_the_gpu_equals_the_padded_model(amp):
    """--unpad on CUDA: logits and gradients as the padded model's (fp32 tight, bf16
    autocast within bf16's rounding)."""
    import copy

    from fine_tune.unpad import unpad
    from test_unpad import model_and_batch
    model, inputs, _ = model_and_batch()
    model, inputs = model.cuda().train(), {k: v.cuda() for k, v in inputs.items()}
    fast = unpad(copy.deepcopy(model))
    labels = torch.tensor([0, 1, 2, 1, 0], device="cuda")
    logits = []
    for each in (model, fast):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = each(**inputs).logits
        torch.nn.functional.cross_entropy(out.float(), labels).backward()
        logits.append(out.float())
    tolerance = dict(atol=3e-2, rtol=3e-2) if amp else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1], logits[0], **tolerance)
    for ours, theirs in zip(fast.parameters(), model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, **tolerance)


BASELINES = {  # name: (script, flags beyond the LAD command's, minus the gates' where absent)
    "labels_only": ("run_kd_distil.py", "--soft_weight 0 --hard_weight 1"),
    "KD": ("run_kd_distil.py", ""),
    "TinyBERT": ("run_tinybert_distil.py", "--intermediate_step 2"),
    "MiniLM": ("run_minilm_distil.py", "--relation_heads 4"),
    "PKD_random": ("run_pkd_distill.py", "--layer_map random"),
    "LAD_frozen": ("run_lad_distil.py", "--gate_mode frozen"),
    "LAD_uniform": ("run_lad_distil.py", "--gate_mode uniform"),
}


@pytest.mark.skipif(DRY, reason="their CPU runs are in test_ablations.py and test_torchrun.py")
@pytest.mark.parametrize("name", BASELINES)
def test_baselines_and_ablations_train_on_the_gpu_in_bf16(work, name):
    script, extra = BASELINES[name]
    gated = script == "run_lad_distil.py"
    small = {k: v for k, v in (SMALL | GPU).items() if gated or k not in GATE_FLAGS}
    unused = {} if gated else {flag[2:]: None for flag in flags(LAD) if flag.startswith("--gate_")}
    if script == "run_kd_distil.py":
        unused["mu"] = None
    run_script(script, *seed_flags(LAD, **small | unused, experiment=f"{name}_gpu"), *extra.split(),
               "--amp", "bf16", cwd=work)
    folder = work / "exp" / f"{name}_gpu_bert_mnli"
    state = torch.load(folder / "model-5.pt", weights_only=True)
    assert all(t.dtype != torch.bfloat16 and t.isfinite().all() for t in state.values())
    log = pd.read_csv(folder / "train_log.csv")
    assert log.filter(like="loss/").notna().all().all()
