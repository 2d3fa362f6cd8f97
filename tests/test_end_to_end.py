"""The seed's teacher, evaluation and prediction commands through the real entry scripts.

Only --ptrain_ver, step counts and the device differ from README.md's commands.
"""
import json
import re

import pandas as pd
import pytest
import torch

from conftest import flags, run_script, scores
from fine_tune.data import LABELS, load_tokenized
from fine_tune.evaluation import predict
from fine_tune.modeling import build_classifier, load_tokenizer

TEACHER = """
--experiment teacher_base                 \\
--model bert                   \\
--ptrain_ver tiny-bert \\
--task mnli                    \\
--dataset train                \\
--num_class 3                  \\
--accum_step 1                 \\
--batch_size 32                \\
--beta1 0.9                    \\
--beta2 0.999                  \\
--ckpt_step 5                  \\
--dropout 0.1                  \\
--eps 1e-8                     \\
--log_step 2                   \\
--lr 3e-4                      \\
--max_norm 1.0                 \\
--max_seq_len 128              \\
--device_id -1                 \\
--seed 42                      \\
--total_step 12                \\
--warmup_step  2               \\
--weight_decay 0.01
"""


def eval_flags(dataset, batch_size=512):
    return flags(f"""--experiment teacher_base --model bert --task mnli --dataset {dataset}
                     --batch_size {batch_size} --device_id -1""")


@pytest.fixture(scope="module")
def teacher(assets, tmp_path_factory):
    """One trained teacher experiment shared by the tests of this module."""
    import shutil
    root, data_dir, bert = assets
    work = tmp_path_factory.mktemp("e2e")
    shutil.copytree(data_dir, work / "data" / "fine_tune")
    (work / "tiny-bert").symlink_to(bert)
    result = run_script("run_fine_tune.py", *flags(TEACHER), cwd=work)
    return work, result


def test_checkpoints_at_ckpt_steps_and_the_last_step(teacher):
    work, result = teacher
    folder = work / "exp" / "teacher_base_bert_mnli"
    assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-10.pt", "model-12.pt", "model-5.pt"]
    assert (folder / "tokenizer" / "tokenizer_config.json").is_file()
    assert list((folder / "log").glob("events.out.tfevents.*"))
    # stderr is a pipe here, as in a log file: one plain line per --log_step (2), no bars.
    assert "\r" not in result.stderr
    steps = re.findall(r"^teacher_base_bert_mnli step (\d+)/12  loss \d", result.stderr, re.M)
    assert steps == ["2", "4", "6", "8", "10", "12"], result.stderr


def test_config_round_trips_every_flag(teacher):
    work, _ = teacher
    config = json.loads((work / "exp" / "teacher_base_bert_mnli" / "config.json").read_text())
    given = flags(TEACHER)
    for name, value in zip(given[::2], given[1::2]):
        stored = config[name.lstrip("-")]
        if name == "--ptrain_ver":  # a local folder is recorded as its absolute path
            value = str(work / value)
        assert str(stored) == value or float(stored) == float(value), name
    model_config = json.loads((work / "exp" / "teacher_base_bert_mnli" / "model_config.json").read_text())
    assert model_config["hidden_dropout_prob"] == 0.1
    assert model_config["attention_probs_dropout_prob"] == 0.1
    assert list(model_config["id2label"].values()) == list(LABELS)


def test_training_logs_loss_and_learning_rate_to_tensorboard(teacher):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    work, _ = teacher
    events = EventAccumulator(str(work / "exp" / "teacher_base_bert_mnli" / "log"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/ce", "loss/total", "lr/model"} <= set(tags)
    assert [e.step for e in events.Scalars("loss/ce")] == [2, 4, 6, 8, 10, 12]
    lrs = {e.step: e.value for e in events.Scalars("lr/model")}
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)          # linear decay ends at total_step
    assert lrs[2] == pytest.approx(3e-4, rel=1e-6)            # warmup peaks at warmup_step


def test_evaluation_table_results_file_and_reproducibility(teacher):
    work, _ = teacher
    folder = work / "exp" / "teacher_base_bert_mnli"
    for dataset in ("dev_matched", "dev_mismatched", "train"):
        result = run_script("run_fine_tune_eval.py", *eval_flags(dataset), cwd=work)
        results = pd.read_csv(folder / f"results_{dataset}.csv")
        assert list(results["step"]) == [5, 10, 12]
        assert results["accuracy"].between(0, 1).all() and results["macro_f1"].between(0, 1).all()
        best = results.loc[results["accuracy"].idxmax()]
        assert f"best (accuracy): model-{int(best['step'])}.pt" in result.stdout
    # Evaluating again, with another batch size, gives the same numbers.
    first = scores(folder / "results_dev_matched.csv")
    run_script("run_fine_tune_eval.py", *eval_flags("dev_matched", batch_size=7), cwd=work)
    pd.testing.assert_frame_equal(first, scores(folder / "results_dev_matched.csv"))


def test_reloaded_checkpoint_gives_identical_predictions(teacher):
    """A checkpoint rebuilt in this process from the experiment folder alone predicts
    exactly what generate_test_prediction.py wrote, whatever the batch size."""
    work, _ = teacher
    folder = work / "exp" / "teacher_base_bert_mnli"
    run_script("generate_test_prediction.py", *flags("""--experiment teacher_base --model bert
        --task mnli --dataset test_matched --batch_size 256 --ckpt 12 --device_id -1"""), cwd=work)
    written = pd.read_csv(folder / "predictions" / "12" / "MNLI-m.tsv", sep="\t")["prediction"]

    config = json.loads((folder / "config.json").read_text())
    data = load_tokenized(work / "data" / "fine_tune", "mnli", "test_matched",
                          load_tokenizer(folder / "tokenizer"), config["max_seq_len"])
    model = build_classifier(json.loads((folder / "model_config.json").read_text()))
    model.load_state_dict(torch.load(folder / "model-12.pt", weights_only=True))
    for batch_size in (3, 512):
        predicted = predict(model, data, batch_size, torch.device("cpu")).argmax(-1)  # logits
        assert [LABELS[i] for i in predicted] == list(written)
    # The checkpoints hold trained weights: they change from step to step.
    early = torch.load(folder / "model-5.pt", weights_only=True)
    assert not torch.equal(early["classifier.weight"], model.state_dict()["classifier.weight"])


@pytest.mark.parametrize("dataset, filename, rows", [("test_matched", "MNLI-m.tsv", 40),
                                                     ("test_mismatched", "MNLI-mm.tsv", 50)])
def test_submission_file(teacher, dataset, filename, rows):
    work, _ = teacher
    result = run_script("generate_test_prediction.py", *flags(f"""
        --experiment teacher_base --model bert --task mnli --dataset {dataset}
        --batch_size 256 --ckpt 10 --device_id -1"""), cwd=work)
    path = work / "exp" / "teacher_base_bert_mnli" / "predictions" / "10" / filename
    assert str(path.relative_to(work)) in result.stdout
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert len(lines) == rows + 1
    test = pd.read_csv(work / "data" / "fine_tune" / "MNLI" / f"{dataset}.tsv", sep="\t",
                       quoting=3, dtype=str, keep_default_na=False)
    assert [line.split("\t")[0] for line in lines[1:]] == list(test["index"])
    assert {line.split("\t")[1] for line in lines[1:]} <= set(LABELS)


def test_bf16_dynamic_padding_and_length_grouping_through_the_scripts(workdir):
    from conftest import seed_flags
    refused = run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=3), "--group_by_length",
                         cwd=workdir, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --group_by_length only saves time when batches are cut to their longest row: add "
        "--dynamic_padding, or leave --group_by_length out")
    assert not (workdir / "exp").exists()
    run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=3, ckpt_step=3, warmup_step=1),
               "--amp", "bf16", "--dynamic_padding", "--group_by_length", cwd=workdir)
    folder = workdir / "exp" / "teacher_base_bert_mnli"
    config = json.loads((folder / "config.json").read_text())
    assert config["amp"] == "bf16" and config["dynamic_padding"] is True
    assert config["group_by_length"] is True
    state = torch.load(folder / "model-3.pt", weights_only=True)
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # fp32 master weights
    run_script("generate_test_prediction.py", *flags("""--experiment teacher_base --model bert
        --task mnli --dataset test_matched --batch_size 256 --ckpt 3 --device_id -1 --amp bf16"""),
               cwd=workdir)
    lines = (folder / "predictions" / "3" / "MNLI-m.tsv").read_text().splitlines()
    assert len(lines) == 41 and {line.split("\t")[1] for line in lines[1:]} <= set(LABELS)
