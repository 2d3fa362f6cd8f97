"""The seed's distillation commands through the real entry scripts, then evaluation and
submission files for each student. Only model sizes, step counts and devices differ from
README.md's commands (a 12-layer, 32-wide teacher keeps the seed's layer indices valid)."""
import json
import shutil

import pandas as pd
import pytest
import torch

from conftest import flags, run_script, seed_flags

TEACHER = """--experiment teacher_base --model bert --ptrain_ver tiny-bert-12 --task mnli
  --dataset train --num_class 3 --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999
  --ckpt_step 3000 --dropout 0.1 --eps 1e-8 --log_step 500 --lr 3e-5 --max_norm 1.0
  --max_seq_len 128 --device_id 1 --seed 42 --total_step 36816 --warmup_step 10000
  --weight_decay 0.01"""

LAD = r"""--tmodel bert --teacher_exp teacher_base --tckpt 36816 --experiment LAD_soft_4_6
--model bert --task mnli --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999
--gate_beta1 0.9 --gate_beta2 0.999 --ckpt_step 2000 --d_ff 3072 --d_model 768 --dropout 0.1
--eps 1e-8 --log_step 200 --lr 1e-4 --gate_lr 5e-7 --max_norm 1.0 --gate_max_norm 1.0
--num_attention_heads 12 --num_hidden_layers 6 --type_vocab_size 2 --total_step 49088
--warmup_step 4908 --gate_total_step 49088 --gate_warmup_step 4908 --weight_decay 0.01
--gate_weight_decay 0.01 --seed 42 --device_id 0 --tdevice_id 0 --gate_device_id 0
--softmax_temp 10 --soft_weight 0.5 --hard_weight 0.5 --mu 500"""

LAD_NO = r"""--teacher_exp teacher_base --tmodel bert --tckpt 36816 --experiment LAD_NO_soft_1_42
--model bert --task mnli --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999
--gate_beta1 0.9 --gate_beta2 0.999 --ckpt_step 2000 --d_ff 3072 --d_model 768 --dropout 0.1
--eps 1e-8 --gate_eps 1e-8 --log_step 200 --lr 5e-5 --gate_lr 1e-6 --max_norm 1.0
--gate_max_norm 1.0 --num_attention_heads 12 --num_hidden_layers 6 --total_step 49088
--warmup_step 4908 --gate_total_step 49088 --gate_warmup_step 4908 --type_vocab_size 2
--weight_decay 0.01 --gate_weight_decay 0.01 --device_id 0 --tdevice_id 0 --gate_device_id 0
--seed 42 --softmax_temp 10 --soft_weight 0.5 --hard_weight 0.5 --mu 500"""

PARTIAL = r"""--probing_exp partial_lad --teacher_exp teacher_base --tmodel bert --tckpt 36816
--experiment partial_LAD_5_42 --model bert --task mnli --accum_step 1 --batch_size 32
--beta1 0.9 --beta2 0.999 --ckpt_step 2000 --d_ff 3072 --d_model 768 --dropout 0.1 --eps 1e-8
--log_step 200 --lr 1e-4 --gate_lr 1e-6 --max_norm 1.0 --gate_max_norm 1.0
--num_attention_heads 12 --num_hidden_layers 6 --type_vocab_size 2 --total_step 49088
--warmup_step 4908 --gate_total_step 49088 --gate_warmup_step 4908 --weight_decay 0.01
--device_id 0 --tdevice_id 0 --gate_device_id 0 --gate_beta1 0.9 --gate_beta2 0.999
--gate_eps 1e-8 --gate_weight_decay 0.01 --seed 42 --gate_indices 2,4,6,8,10
--student_indices 1,2,3,4,5,6 --softmax_temp 10 --soft_weight 0.5 --hard_weight 0.5 --mu 500"""

ALP = r"""--alp_exp alp-kd-hidden-v2 --teacher_exp teacher_base --tmodel bert --tckpt 36816
--experiment ALP_KD_hidden_soft_2_42 --model bert --task mnli --accum_step 1 --batch_size 32
--beta1 0.9 --beta2 0.999 --ckpt_step 2000 --d_ff 3072 --d_model 768 --dropout 0.1 --eps 1e-8
--log_step 100 --lr 1e-4 --max_norm 1.0 --num_attention_heads 12 --num_hidden_layers 6
--total_step 49088 --type_vocab_size 2 --seed 65 --warmup_step 4908 --weight_decay 0.01
--device_id 1 --tdevice_id 1 --softmax_temp 10 --mu 500 --soft_weight 0.5 --hard_weight 0.5"""

ALP_V2 = r"""--alp_exp alp-kd-hidden-v2 --teacher_exp teacher_base --tmodel bert --tckpt 36816
--experiment ALP_KD_hidden_v2_soft_3_65 --model bert --task mnli --accum_step 1 --batch_size 32
--beta1 0.9 --beta2 0.999 --ckpt_step 2000 --d_ff 3072 --d_model 768 --dropout 0.1 --eps 1e-8
--log_step 200 --lr 1e-4 --max_norm 1.0 --num_attention_heads 12 --num_hidden_layers 6
--total_step 49088 --type_vocab_size 2 --seed 65 --warmup_step 4908 --weight_decay 0.01
--device_id 1 --tdevice_id 1 --softmax_temp 10 --mu 100 --soft_weight 0.5 --hard_weight 0.5"""

PKD = r"""--teacher_exp teacher_base --tmodel bert --tckpt 36816 --experiment PKD_even_42 --model bert
--task mnli --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999 --ckpt_step 2000
--d_ff 3072 --d_model 768 --dropout 0.1 --eps 1e-8 --log_step 200 --lr 5e-5 --max_norm 1.0
--num_attention_heads 12 --num_hidden_layers 6 --total_step 49088 --type_vocab_size 2 --seed 42
--warmup_step 4908 --weight_decay 0.01 --device_id 0 --tdevice_id 0 --softmax_temp 10 --mu 500
--soft_weight 0.5 --hard_weight 0.5"""

SMALL = dict(d_ff=64, d_model=32, num_attention_heads=2, total_step=5, warmup_step=1,
             gate_total_step=5, gate_warmup_step=1, ckpt_step=2, log_step=1, device_id=-1,
             tdevice_id=-1, gate_device_id=-1, tckpt=4)

STUDENTS = {
    "LAD_soft_4_6": ("run_lad_distil.py", LAD, 11),
    "LAD_NO_soft_1_42": ("run_lad_no_distil.py", LAD_NO, 6),
    "partial_LAD_5_42": ("run_probing_lad.py", PARTIAL, 9),
    "ALP_KD_hidden_soft_2_42": ("run_alp_distil.py", ALP, 0),
    "ALP_KD_hidden_v2_soft_3_65": ("run_alp_distil.py", ALP_V2, 0),
    "PKD_even_42": ("run_pkd_distill.py", PKD, 0),
}
GATE_FLAGS = ("gate_total_step", "gate_warmup_step", "gate_device_id")


def teacher_workdir(assets, deep_bert, folder, device_id=-1, *extra):
    """A working folder with the data, the 12-layer tiny BERT and a teacher fine-tuned for
    4 steps (checkpoints 2 and 4) by the seed's command."""
    root, data_dir, _ = assets
    shutil.copytree(data_dir, folder / "data" / "fine_tune")
    (folder / "tiny-bert-12").symlink_to(deep_bert)
    run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=4, warmup_step=1, ckpt_step=2,
                                                log_step=2, lr=1e-3, device_id=device_id), *extra,
               cwd=folder)
    return folder


@pytest.fixture(scope="module")
def work(assets, deep_bert, tmp_path_factory):
    return teacher_workdir(assets, deep_bert, tmp_path_factory.mktemp("distil"))


@pytest.mark.parametrize("experiment", STUDENTS)
@pytest.mark.slow
def test_seed_distillation_command_trains_a_student(work, experiment):
    script, command, gates = STUDENTS[experiment]
    small = {k: v for k, v in SMALL.items() if gates or k not in GATE_FLAGS}
    result = run_script(script, *seed_flags(command, **small), cwd=work)
    folder = work / "exp" / f"{experiment}_bert_mnli"
    models = ["model-2.pt", "model-4.pt", "model-5.pt"]
    assert sorted(p.name for p in folder.glob("*.pt")) == \
        (["gate-2.pt", "gate-4.pt", "gate-5.pt"] if gates else []) + models + ["train_state.pt"]
    config = json.loads((folder / "config.json").read_text())
    # (the teacher's --ptrain_ver, recorded as the folder's absolute path)
    assert config["max_seq_len"] == 128 and config["ptrain_ver"] == str(work / "tiny-bert-12")
    assert config["tdevice_id"] == -1  # given, or defaulted to --device_id
    assert config["num_hidden_layers"] == 6 and config["mu"] == float(seed_flags(command)[
        seed_flags(command).index("--mu") + 1])
    model_config = json.loads((folder / "model_config.json").read_text())
    assert (model_config["num_hidden_layers"], model_config["hidden_size"]) == (6, 32)
    assert "5/5" in result.stderr
    if gates:
        gate_config = json.loads((folder / "gate_config.json").read_text())
        assert gate_config["num_gates"] == gates
        gate_state = torch.load(folder / "gate-5.pt", weights_only=True)
        assert gate_state["gates.0.norm.weight"].shape == (128, 32)
        assert sum(1 for name in gate_state if name.endswith("linear.weight")) == gates
        # The gates were trained: their state moved between checkpoints.
        assert not torch.equal(torch.load(folder / "gate-2.pt", weights_only=True)["gates.0.linear.weight"],
                               gate_state["gates.0.linear.weight"])
    else:
        assert not (folder / "gate_config.json").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder / "log"))
    events.Reload()
    assert {"loss/hard", "loss/soft", "loss/total", "lr/model",
            *(f"loss/hidden_{j}" for j in range(1, 7))} <= set(events.Tags()["scalars"])
    assert ("lr/gate" in events.Tags()["scalars"]) == bool(gates)

    # The same evaluation and prediction commands as for the teacher.
    run_script("run_fine_tune_eval.py", *flags(f"--experiment {experiment} --model bert --task mnli "
                                               "--dataset dev_matched --batch_size 512 --device_id -1"),
               cwd=work)
    results = pd.read_csv(folder / "results_dev_matched.csv")
    assert list(results["step"]) == [2, 4, 5]
    run_script("generate_test_prediction.py", *flags(
        f"--experiment {experiment} --model bert --task mnli --dataset test_mismatched "
        "--batch_size 256 --ckpt 4 --device_id -1"), cwd=work)
    lines = (folder / "predictions" / "4" / "MNLI-mm.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 51


def test_teacher_is_frozen_and_gets_no_gradient(work):
    """One optimiser step of LAD (training_step: backward, clipping, AdamW, schedule): the
    student and the gates move, the teacher gets no gradient and does not change."""
    import argparse
    from fine_tune.data import load_tokenized
    from fine_tune.distillation import load_teacher
    from fine_tune.lad import GatedObjective, lad_targets
    from fine_tune.modeling import build_classifier, load_tokenizer
    from fine_tune.training import TrainingRun, make_groups, training_step

    optimiser = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, max_norm=1.0,
                     total_step=10, warmup_step=0)
    args = argparse.Namespace(exp_dir=work / "exp", teacher_exp="teacher_base", tmodel="bert",
                              task="mnli", tckpt=4, hard_weight=0.5, soft_weight=0.5,
                              softmax_temp=10.0, mu=500.0, **optimiser,
                              **{f"gate_{k}": v for k, v in optimiser.items()})
    experiment, teacher, config = load_teacher(args)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student_config = teacher.config.to_dict() | {"num_hidden_layers": 6}
    student = build_classifier(student_config)
    cpu = torch.device("cpu")
    objective = GatedObjective(args, lad_targets(12, 6), cpu, cpu, 32, 128)
    data = load_tokenized(work / "data" / "fine_tune", "mnli", "train",
                          load_tokenizer(experiment.path / "tokenizer"), 128)
    teacher_before = {n: p.clone() for n, p in teacher.named_parameters()}
    student_before = {n: p.clone() for n, p in student.named_parameters()}
    gates_before = {n: p.clone() for n, p in objective.named_parameters()}
    run = TrainingRun(args, None, student, cpu, objective, data, teacher, cpu)
    groups = make_groups(run)
    assert [g.name for g in groups] == ["model", "gate"]
    training_step(run, groups, torch.arange(4), 1)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, teacher_before[n]) for n, p in teacher.named_parameters())
    assert not torch.equal(student.classifier.weight, student_before["classifier.weight"])
    assert not torch.equal(student.bert.encoder.layer[0].attention.self.query.weight,
                           student_before["bert.encoder.layer.0.attention.self.query.weight"])
    assert all(not torch.equal(p, gates_before[n]) for n, p in objective.named_parameters()
               if n.endswith("linear.weight"))


@pytest.mark.parametrize("changes, message", [
    (dict(tckpt=36816), "teacher checkpoint exp/teacher_base_bert_mnli/model-36816.pt not found; "
                        "teacher_base_bert_mnli has checkpoints at steps 2, 4"),
    (dict(teacher_exp="teacher_large"), "teacher experiment 'teacher_large' not found: no "
                                        "exp/teacher_large_bert_mnli/config.json"),
    (dict(d_model=64, num_attention_heads=2), "--d_model 64 differs from the teacher's hidden size 32"),
    (dict(gate_indices="2,4,14"), "--gate_indices 2,4,14: layer numbers run from 1 to 12"),
    (dict(gate_indices="4,2"), "--gate_indices 4,2 must be in increasing order"),
    (dict(student_indices="1,2,3"), "--gate_indices has 5 layers but --student_indices only 3"),
    (dict(gate_device_id=3), "--gate_device_id 3: this machine has no CUDA device"),
])
def test_distillation_bad_input(work, changes, message):
    args = seed_flags(PARTIAL, **(SMALL | changes | {"experiment": "bad"}))
    result = run_script("run_probing_lad.py", *args, cwd=work, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (work / "exp" / "bad_bert_mnli").exists()


def test_unknown_alp_variant_lists_the_valid_names(work):
    result = run_script("run_alp_distil.py", *seed_flags(ALP, **{k: v for k, v in SMALL.items() if k not in GATE_FLAGS} | {"alp_exp": "alp-kd-v3"}),
                        cwd=work, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid choice: 'alp-kd-v3' (choose from 'alp-kd', 'alp-kd-hidden', 'alp-kd-hidden-v2')" \
        in result.stderr


def test_dynamic_padding_is_refused_where_it_would_change_the_loss(work):
    result = run_script("run_probing_lad.py", *seed_flags(PARTIAL, **SMALL | {"experiment": "pad"}),
                        "--dynamic_padding", cwd=work, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--dynamic_padding would change this method's loss" in result.stderr
    assert not (work / "exp" / "pad_bert_mnli").exists()


def test_teacher_and_gate_devices_default_to_the_students(work):
    run_script("run_lad_distil.py", *seed_flags(LAD, **SMALL | dict(
        experiment="LAD_devices", tdevice_id=None, gate_device_id=None, total_step=1,
        gate_total_step=1, warmup_step=0, gate_warmup_step=0)), cwd=work)
    config = json.loads((work / "exp" / "LAD_devices_bert_mnli" / "config.json").read_text())
    assert (config["device_id"], config["tdevice_id"], config["gate_device_id"]) == (-1, -1, -1)


@pytest.mark.parametrize("script, command", [
    ("teacher", TEACHER), ("lad", LAD), ("lad_no", LAD_NO), ("probing", PARTIAL), ("alp", ALP),
    ("alp", ALP_V2), ("pkd", PKD)])
def test_flags_left_out_take_the_seed_commands_values(script, command):
    """README: a flag left out behaves as in the seed's command. Exceptions: what names the
    run or the machine, and ALP-KD's two seed commands, which disagree on --mu and --log_step
    (the defaults follow the first)."""
    from fine_tune import cli
    parser = getattr(cli, f"{script}_parser")()
    given = vars(parser.parse_args(flags(command)))
    required = ["--experiment", "x"] + ([] if script == "teacher" else ["--teacher_exp", "t", "--tckpt", "1"])
    defaults = vars(parser.parse_args(required))
    ignored = {"experiment", "teacher_exp", "tckpt", "device_id", "tdevice_id", "gate_device_id",
               "ptrain_ver", "num_class", "gate_total_step", "gate_warmup_step"}
    if command is ALP_V2:
        ignored |= {"mu", "log_step"}
    differing = {k: (defaults[k], v) for k, v in given.items() if k not in ignored and defaults[k] != v}
    assert differing == {}
    # The gate schedule left out follows the model's, which is the seed's value.
    if "gate_total_step" in given:
        assert (given["gate_total_step"], given["gate_warmup_step"]) == (given["total_step"], given["warmup_step"])
