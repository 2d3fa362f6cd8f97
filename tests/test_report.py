"""python -m fine_tune.report: the table of all experiments and the seed grouping."""
import pandas as pd
import pytest

from conftest import flags
from fine_tune import cli
from fine_tune.errors import UserError
from fine_tune.report import build_parser, parameter_count, report

TEACHER = ("--ptrain_ver tiny-bert --batch_size 16 --ckpt_step 2 --log_step 2 --lr 1e-3 "
           "--max_seq_len 64 --device_id -1 --total_step 4 --warmup_step 1")


def test_report_rows_and_seed_groups(workdir, monkeypatch, capsys):
    import torch
    from fine_tune.evaluation import evaluate_checkpoints
    from fine_tune.teacher import fine_tune_teacher
    monkeypatch.chdir(workdir)
    for seed in (1, 2):
        fine_tune_teacher(cli.teacher_parser().parse_args(
            flags(TEACHER) + ["--experiment", f"teacher_s{seed}", "--seed", str(seed)]))
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(
            f"--experiment teacher_s{seed} --dataset dev_matched --device_id -1")))
    with pytest.raises(UserError, match="no experiments under --exp_dir exp matching --filter zzz"):
        report(build_parser().parse_args(["--filter", "zzz"]))
    report(build_parser().parse_args([]))
    out = capsys.readouterr().out
    table = pd.read_csv(workdir / "exp" / "report.csv")
    assert list(table["experiment"]) == ["teacher_s1_bert_mnli", "teacher_s2_bert_mnli"]
    assert list(table["method"]) == ["teacher", "teacher"] and list(table["seed"]) == [1, 2]
    state = torch.load(workdir / "exp" / "teacher_s1_bert_mnli" / "model-4.pt", weights_only=True)
    assert table["parameters"].iloc[0] == sum(t.numel() for k, t in state.items()
                                              if not k.endswith("position_ids"))
    for i, seed in enumerate((1, 2)):
        results = pd.read_csv(workdir / "exp" / f"teacher_s{seed}_bert_mnli" / "results_dev_matched.csv")
        best = results.loc[results["accuracy"].idxmax()]
        assert table["dev_matched accuracy"].iloc[i] == pytest.approx(best["accuracy"])
        assert table["selected_step"].iloc[i] == best["step"]
    mean = table["dev_matched accuracy"].mean()
    assert f"{mean:.4f} ± " in out and "(n=2)" in out
    markdown = (workdir / "exp" / "report.md").read_text()
    assert markdown.startswith("Scores of the checkpoint with the best first metric on each "
                               "task's dev split") and "| teacher_s1_bert_mnli |" in markdown


def test_parameter_count_of_bert_base():
    config = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
              "id2label": {0: "a", 1: "b", 2: "c"}}
    assert parameter_count(config) == 109_484_547  # BertForSequenceClassification, 3 labels
