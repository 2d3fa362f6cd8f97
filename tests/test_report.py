"""python -m fine_tune.report: the table of all experiments and the seed grouping."""
import pandas as pd
import pytest

from conftest import flags
from fine_tune import cli
from fine_tune.errors import UserError
from fine_tune.report import build_parser, parameter_count, report
from fine_tune.settings import Settings

TEACHER = ("--ptrain_ver tiny-bert --batch_size 16 --ckpt_step 2 --log_step 2 --lr 1e-3 "
           "--max_seq_len 64 --device_id -1 --total_step 4 --warmup_step 1")


STUDENT = ("--teacher_exp teacher_s1 --tckpt 4 --d_model 32 --d_ff 64 --num_attention_heads 2 "
           "--num_hidden_layers 2 --batch_size 16 --ckpt_step 2 --log_step 1 --total_step 4 "
           "--warmup_step 1 --lr 1e-3 --device_id -1 --tdevice_id -1 "
           "--eval_during_training dev_matched")
# Two runs (seeds 1 and 2) of each method family: (name, parser, entry, extra flags, method).
FAMILIES = [("LAD", cli.lad_parser, "fine_tune.lad:distil_lad", "--gate_device_id -1", "LAD"),
            ("ALP", cli.alp_parser, "fine_tune.alp:distil_alp", "", "ALP-KD (alp-kd-hidden-v2)"),
            ("PKD", cli.pkd_parser, "fine_tune.pkd:distil_pkd", "", "BERT-PKD (mse)")]


def call(parser, target, argv):
    import importlib
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(Settings(**vars(parser().parse_args(argv))))


def test_report_rows_seed_groups_and_plots(workdir, monkeypatch, capsys):
    import torch
    from matplotlib.image import imread
    monkeypatch.chdir(workdir)
    for seed in (1, 2):  # teachers: evaluated afterwards, as the seed pipeline does
        call(cli.teacher_parser, "fine_tune.teacher:fine_tune_teacher",
             flags(TEACHER) + ["--experiment", f"teacher_s{seed}", "--seed", str(seed)])
        call(cli.eval_parser, "fine_tune.evaluation:evaluate_checkpoints", flags(
            f"--experiment teacher_s{seed} --dataset dev_matched --device_id -1"))
    for name, parser, target, extra, _ in FAMILIES:  # students: evaluated during training
        for seed in (1, 2):
            call(parser, target, flags(f"{STUDENT} {extra} --experiment {name}_s{seed} --seed {seed}"))
    with pytest.raises(UserError, match="no experiments under --exp_dir exp matching --filter zzz"):
        report(build_parser().parse_args(["--filter", "zzz"]))
    capsys.readouterr()
    report(build_parser().parse_args(["--plots"]))
    out = capsys.readouterr().out
    table = pd.read_csv(workdir / "exp" / "report.csv")
    names = [f"{name}_s{seed}" for name in ("ALP", "LAD", "PKD", "teacher") for seed in (1, 2)]
    assert list(table["experiment"]) == [f"{name}_bert_mnli" for name in names]
    methods = {name: method for name, _, _, _, method in FAMILIES} | {"teacher": "teacher"}
    assert list(table["method"]) == [methods[name.split("_")[0]] for name in names]
    assert list(table["seed"]) == [1, 2] * 4
    assert set(table["teacher"].dropna()) == {"teacher_s1:4"}
    state = torch.load(workdir / "exp" / "teacher_s1_bert_mnli" / "model-4.pt", weights_only=True)
    assert table.loc[6, "parameters"] == sum(t.numel() for k, t in state.items()
                                             if not k.endswith("position_ids"))
    for i, name in enumerate(names):  # every number is the results file's
        results = pd.read_csv(workdir / "exp" / f"{name}_bert_mnli" / "results_dev_matched.csv")
        assert list(results["step"]) == [2, 4]
        best = results.loc[results["accuracy"].idxmax()]
        assert table["dev_matched accuracy"].iloc[i] == pytest.approx(best["accuracy"])
        assert table["selected_step"].iloc[i] == best["step"]
        assert table["examples/s"].iloc[i] == pytest.approx(best["examples_per_s"], abs=0.05)
        assert table["dev_matched best accuracy"].iloc[i] == \
            f"{best['accuracy']:.4f} @{int(best['step'])}"
    # Seed groups: one per method family, never mixing methods, mean ± sample std (n=2).
    markdown = (workdir / "exp" / "report.md").read_text()
    for pair in range(4):
        values = table["dev_matched accuracy"].iloc[2 * pair:2 * pair + 2]
        group = f"{values.mean():.4f} ± {values.std(ddof=1):.4f} (n=2)"
        assert group in out and group in markdown
    assert out.count("(n=2)") == 4 and "(n=1)" not in out
    assert markdown.startswith("Scores of the checkpoint with the best first metric on each "
                               "task's dev split") and "| teacher_s1_bert_mnli |" in markdown

    # A subset goes to files of its own; a --select_on the task lacks is one line.
    report(build_parser().parse_args(["--filter", "LAD", "--plots"]))
    assert pd.read_csv(workdir / "exp" / "report_LAD.csv")["experiment"].str.startswith("LAD").all()
    assert len(pd.read_csv(workdir / "exp" / "report.csv")) == 8  # the full report, untouched
    assert {p.name for p in (workdir / "exp" / "plots_LAD").iterdir()} >= {"LAD_s1_bert_mnli_gates.png"}
    with pytest.raises(UserError, match="--select_on dev: --task mnli has no labelled split 'dev'"):
        report(build_parser().parse_args(["--select_on", "dev"]))

    # Plots: the task's dev curves, every experiment's loss terms, LAD's gate values.
    plots = workdir / "exp" / "plots"
    expected = {"mnli_dev_matched_accuracy.png"} | {f"{n}_bert_mnli_loss.png" for n in names} \
        | {f"LAD_s{seed}_bert_mnli_gates.png" for seed in (1, 2)}
    assert {p.name for p in plots.iterdir()} == expected
    for name in expected:
        png = plots / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        height, width = imread(png).shape[:2]
        assert width > 500 and height > 300


def test_parameter_count_of_bert_base():
    config = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
              "id2label": {0: "a", 1: "b", 2: "c"}}
    assert parameter_count(config) == 109_484_547  # BertForSequenceClassification, 3 labels
