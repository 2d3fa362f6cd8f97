"""The baselines (KD, labels only, TinyBERT, MiniLM) and the ablations (BERT-PKD's
--layer_map, LAD's --gate_mode) through their real entry scripts: what each trains,
logs and records, a labels-only student that never runs its teacher, frozen gates that
never move, a random layer map resumed bitwise after a kill, one-line errors with nothing
written, a narrower student exported for transformers' pipeline. Their losses against
the papers' equations: test_ablation_losses.py; under torchrun: test_torchrun.py."""
import json
import shutil

import pandas as pd
import pytest
import torch

from conftest import run_script, seed_flags
from test_resume import LAD, TEACHER, assert_bitwise_equal, run_hooked, weights

# A 4-step teacher of 4 layers (32 wide, 2 heads); 2-layer students of 4 steps.
SHORT_TEACHER = dict(total_step=4, ckpt_step=4, log_step=2, accum_step=1, max_seq_len=32)
STUDENT = ("--teacher_exp teacher_base --tckpt 4 --task mnli --num_hidden_layers 2 --d_model 32 "
           "--d_ff 64 --num_attention_heads 2 --batch_size 16 --total_step 4 --warmup_step 1 "
           "--ckpt_step 2 --log_step 2 --lr 1e-3 --device_id -1").split()


@pytest.fixture(scope="module")
def work(assets, tmp_path_factory):
    """The data, the tiny BERT, a 16-wide 2-layer BERT with its vocabulary (a narrower
    student's pre-trained model) and the teacher, once for the module."""
    from fine_tune.demo_data import demo_texts, write_tiny_bert
    root, data_dir, bert = assets
    folder = tmp_path_factory.mktemp("ablations")
    shutil.copytree(data_dir, folder / "data" / "fine_tune")
    (folder / "tiny-bert").symlink_to(bert)
    write_tiny_bert(folder / "narrow-bert", demo_texts(data_dir), hidden_size=16, num_layers=2,
                    num_heads=2, intermediate_size=32, max_position_embeddings=128)
    run_script("run_fine_tune.py", *seed_flags(TEACHER, **SHORT_TEACHER), cwd=folder)
    return folder


@pytest.fixture
def teacher_forwards(monkeypatch):
    """How many forward passes the students' teachers ran."""
    import fine_tune.distillation as distillation
    load, count = distillation.load_teacher, [0]

    def counted(args):
        experiment, teacher, config = load(args)
        teacher.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        return experiment, teacher, config
    monkeypatch.setattr(distillation, "load_teacher", counted)
    return count


def trained(work, experiment):
    folder = work / "exp" / f"{experiment}_bert_mnli"
    return (folder, json.loads((folder / "config.json").read_text()),
            pd.read_csv(folder / "train_log.csv"))


def test_kd_and_the_labels_only_floor(work, teacher_forwards):
    from fine_tune.experiment_rows import experiment_row
    run_script("run_kd_distil.py", *STUDENT, "--experiment", "KD", "--dynamic_padding", "--amp", "bf16",
               cwd=work)
    folder, config, log = trained(work, "KD")
    assert config["method"] == "KD" and teacher_forwards[0] == 4  # one per step
    assert {"loss/hard", "loss/soft"} <= set(log.columns)
    assert not any(c.startswith("loss/hidden") for c in log.columns)
    run_script("run_kd_distil.py", *STUDENT, "--experiment", "labels_only", "--soft_weight", "0",
               "--hard_weight", "1", cwd=work)
    folder, config, log = trained(work, "labels_only")
    assert teacher_forwards[0] == 4  # none more: the floor never runs its teacher
    assert config["method"] == "labels only" and "loss/soft" not in log.columns
    row = experiment_row(folder, None)
    assert (row["method"], row["teacher"]) == ("labels only", "")
    assert experiment_row(work / "exp" / "KD_bert_mnli", None)["teacher"] == "teacher_base:4"


def test_tinybert_narrower_student_in_two_stages_and_bf16(work):
    run_script("run_tinybert_distil.py", *STUDENT, "--experiment", "TinyBERT", "--d_model", "16",
               "--d_ff", "32", "--student_ptrain_ver", "narrow-bert",
               "--intermediate_step", "2", "--log_step", "1", "--amp", "bf16", cwd=work)
    folder, config, log = trained(work, "TinyBERT")
    assert config["method"] == "TinyBERT (2 stages)"
    assert config["student_ptrain_ver"] == str(work / "narrow-bert")  # (absolute, as --ptrain_ver)
    assert config["init_embeddings"] == "copy"  # (left out: the student's own model's)
    assert json.loads((folder / "model_config.json").read_text())["hidden_size"] == 16
    # The projection from 16 to the teacher's 32, trained with the student in stage 1 and
    # saved; in stage 2 (steps 3-4, the prediction terms) it gets no gradient and AdamW
    # leaves it alone, while the classifier, which stage 1 left alone, learns.
    assert weights(folder, 4, "gate")["projection.weight"].shape == (32, 16)
    assert_bitwise_equal(weights(folder, 2, "gate"), weights(folder, 4, "gate"))
    assert not torch.equal(weights(folder, 2)["classifier.weight"], weights(folder, 4)["classifier.weight"])
    intermediate = ["loss/embedding", "loss/hidden_1", "loss/hidden_2", "loss/attention_1",
                    "loss/attention_2"]
    stage1, stage2 = log[log["step"] <= 2], log[log["step"] > 2]
    assert (stage1[intermediate] > 0).all().all() and (stage1["loss/soft"] == 0).all()
    assert (stage2[intermediate] == 0).all().all() and (stage2["loss/soft"] > 0).all()
    # Each stage has its own schedule (--warmup_step 1: the first stage's share rounds to
    # 0 of its 2 steps, the second's is 1). The log shows the rate of the step to come:
    # stage 1 decays from 1e-3 (step 2 at 5e-4), stage 2 warms up (step 3 at 0, step 4 at
    # 1e-3) and ends at 0.
    assert log["lr/model"].tolist() == pytest.approx([5e-4, 0, 1e-3, 0])


def test_minilm_narrower_student_from_random_layers(work):
    run_script("run_minilm_distil.py", *STUDENT, "--experiment", "MiniLM", "--d_model", "16",
               "--d_ff", "32", "--num_attention_heads", "4", "--student_init", "random",
               "--relation_heads", "4", "--amp", "bf16", "--dynamic_padding", cwd=work)
    folder, config, log = trained(work, "MiniLM")
    assert config["method"] == "MiniLM" and config["relation_heads"] == 4
    assert config["init_embeddings"] == "random"  # (no --student_ptrain_ver)
    relations = log[["loss/relation_qq", "loss/relation_kk", "loss/relation_vv"]]
    assert (relations > 0).all().all() and relations.notna().all().all()
    assert not (folder / "gate-4.pt").exists()  # no parameters of its own


def test_gate_modes(work, monkeypatch):
    import fine_tune.lad as lad
    seen, bind = [], lad.GatedObjective.bind

    def keep(objective, model, teacher):
        seen.append((objective, {k: v.clone() for k, v in objective.state_dict().items()}))
        bind(objective, model, teacher)
    monkeypatch.setattr(lad.GatedObjective, "bind", keep)
    gates = ["--gate_lr", "1e-2"]  # large: a gate that trained would move
    run_script("run_lad_distil.py", *STUDENT, *gates, "--experiment", "frozen", "--gate_mode",
               "frozen", cwd=work)
    objective, before = seen[-1]
    assert objective.gates[0].linear.weight.requires_grad is False
    assert_bitwise_equal(objective.state_dict(), before)  # unchanged after 4 steps
    folder, config, log = trained(work, "frozen")
    assert config["method"] == "LAD (frozen gates)" and not list(folder.glob("gate-*.pt"))
    assert json.loads((folder / "gate_config.json").read_text())["gate_mode"] == "frozen"
    assert {"gate_z/H_2", "gate_z_std/H_4"} <= set(log.columns) and "lr/gate" not in log.columns

    run_script("run_lad_distil.py", *STUDENT, *gates, "--experiment", "uniform", "--gate_mode",
               "uniform", cwd=work)
    objective, _ = seen[-1]
    assert list(objective.parameters()) == []
    folder, config, log = trained(work, "uniform")
    assert config["method"] == "LAD (uniform gates)" and not list(folder.glob("gate-*.pt"))
    assert (log.filter(like="gate_z/") == 0.5).all().all()
    assert (log.filter(like="gate_z_std/") == 0).all().all()

    run_script("run_lad_distil.py", *STUDENT, *gates, "--experiment", "learned", cwd=work)
    objective, before = seen[-1]
    assert not torch.equal(objective.gates[0].linear.weight, before["gates.0.linear.weight"])
    assert trained(work, "learned")[1]["method"] == "LAD"


@pytest.mark.parametrize("script, extra, message", [
    ("run_minilm_distil.py", "--relation_heads 3",
     "--relation_heads 3 does not divide the student's width 32; use --relation_heads 2"),
    ("run_tinybert_distil.py", "--d_model 16 --d_ff 32",
     "cannot start from the layers of the pre-trained model"),
    ("run_tinybert_distil.py", "--num_attention_heads 4 --student_init random",
     "use --num_attention_heads 2 (the teacher's)"),
    ("run_tinybert_distil.py", "--intermediate_step 4",
     "--intermediate_step 4 leaves no steps for the second stage"),
    ("run_pkd_distill.py", "--layer_map last --pkd_loss pkd-skip", "use --pkd_loss mse"),
    ("run_pkd_distill.py", "--layer_map random --num_hidden_layers 5",
     "--num_hidden_layers 5 is outside what this method takes"),
    ("run_minilm_distil.py", "--minilm_teacher_layer 9", "the teacher's layers run from 1 to 4"),
    ("run_kd_distil.py", "--d_model 16 --d_ff 32 --student_ptrain_ver tiny-bert",
     "cannot start from the layers of the pre-trained model"),
    ("run_kd_distil.py", "--soft_weight 0 --hard_weight 0", "leave KD no loss to train"),
    ("run_tinybert_distil.py", "--dynamic_padding", "--dynamic_padding would change"),
    ("run_minilm_distil.py", "--dynamic_padding --unpad", "--unpad would change"),
])
def test_impossible_settings_are_one_line_and_write_nothing(work, script, extra, message):
    result = run_script(script, *STUDENT, "--experiment", "bad", *extra.split(), cwd=work,
                        check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (work / "exp" / "bad_bert_mnli").exists()


def test_a_narrower_student_exports_for_pipeline(work):
    from transformers import pipeline
    from fine_tune import cli
    from fine_tune.export import build_parser, export
    run_script("run_kd_distil.py", *STUDENT, "--experiment", "narrow", "--d_model", "16",
               "--d_ff", "32", "--student_ptrain_ver", "narrow-bert", cwd=work)
    out = work / "narrow-hf"
    export(build_parser().parse_args(["--experiment", "narrow", "--ckpt", "4", "--out", str(out),
                                      "--exp_dir", str(work / "exp")]))
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 16
    classify = pipeline("text-classification", model=str(out), device=-1)
    result = classify({"text": "a man is playing", "text_pair": "a woman sings"})
    result = result[0] if isinstance(result, list) else result
    assert result["label"] in {"contradiction", "entailment", "neutral"}
    assert cli.kd_parser  # (the parser export's --help points at)


@pytest.mark.slow
def test_random_layer_map_killed_and_resumed_draws_the_same_layers(work):
    """320 rows in batches of 32: steps 11-14 are the second epoch, with its own draw."""
    for exp_dir in ("random_ref", "random"):
        shutil.copytree(work / "exp" / "teacher_base_bert_mnli", work / exp_dir / "teacher_base_bert_mnli")
    pkd = seed_flags(LAD, gate_lr=None, gate_device_id=None, tckpt=4, experiment="PKD_random") + [
        "--layer_map", "random"]
    run_script("run_pkd_distill.py", *pkd, "--exp_dir", "random_ref", cwd=work)
    killed = run_hooked("kill_after_step", 8, "run_pkd_distill.py", pkd + ["--exp_dir", "random"], work)
    assert killed.returncode == -9
    run_script("run_pkd_distill.py", *pkd, "--exp_dir", "random", "--resume", cwd=work)
    assert_bitwise_equal(weights(work / "random" / "PKD_random_bert_mnli", 14),
                         weights(work / "random_ref" / "PKD_random_bert_mnli", 14))
