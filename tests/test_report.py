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


@pytest.mark.slow
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
    # (n=2) twice per group: dev_matched accuracy and macro_f1, MNLI's metrics.
    assert out.count("(n=2)") == 8 and "(n=1)" not in out
    # Evaluated on dev_matched only: no MNLI GLUE score (it needs dev_mismatched too).
    assert ("MNLI: no GLUE score, which needs dev_matched accuracy and dev_mismatched accuracy "
            "of the selected checkpoint") in out
    assert markdown.startswith("Scores of the checkpoint with the best first metric on each "
                               "task's dev split") and "| teacher_s1_bert_mnli |" in markdown

    # A subset goes to files of its own; a --select_on the task lacks is one line.
    report(build_parser().parse_args(["--filter", "LAD", "--plots"]))
    assert pd.read_csv(workdir / "exp" / "report_LAD.csv")["experiment"].str.startswith("LAD").all()
    assert len(pd.read_csv(workdir / "exp" / "report.csv")) == 8  # the full report, untouched
    # --folders without --output_dir: a subset too, to files named after those folders.
    report(build_parser().parse_args(["--folders", "LAD_s1_bert_mnli,LAD_s2_bert_mnli"]))
    assert len(pd.read_csv(workdir / "exp" / "report.csv")) == 8
    subset = sorted((workdir / "exp").glob("report_folders-*.csv"))
    assert len(subset) == 1 and len(pd.read_csv(subset[0])) == 2
    assert subset[0].with_suffix(".md").is_file()
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


def test_gate_plot_shows_each_gates_mean_and_spread(tmp_path, monkeypatch):
    """<experiment>_gates.png: the mean z of each gate above, its std (gate_z_std/H_i) in a
    panel below, in the mean's colour; a train_log.csv from before the std was logged
    still gets its single panel of means."""
    from matplotlib.image import imread
    from fine_tune import plots
    figures, save = {}, plots._save  # each figure's panels: (y label, [(x, y, colour)])

    def keep(plt, figure, path):
        figures[path.name] = [(axis.get_ylabel(), [(tuple(line.get_xdata()), tuple(line.get_ydata()),
                                                    line.get_color()) for line in axis.get_lines()])
                              for axis in figure.axes]
        return save(plt, figure, path)
    monkeypatch.setattr(plots, "_save", keep)
    step = [10, 20, 30]
    logs = {"new": {"step": step, "loss/total": [3.0, 2.0, 1.0],
                    "gate_z/H_2": [0.5, 0.49, 0.5], "gate_z_std/H_2": [0.02, 0.05, 0.1],
                    "gate_z/H_3": [0.5, 0.5, 0.49], "gate_z_std/H_3": [0.01, 0.01, 0.02]},
            "old": {"step": step, "loss/total": [3.0, 2.0, 1.0], "gate_z/H_2": [0.5, 0.4, 0.3]}}
    for name, columns in logs.items():
        (tmp_path / name).mkdir()
        pd.DataFrame(columns).to_csv(tmp_path / name / "train_log.csv", index=False)
    table = pd.DataFrame({"task": ["mnli", "mnli"], "experiment": ["new", "old"]})
    written = plots.write_plots(tmp_path / "plots", tmp_path, table, None)
    assert {p.name for p in written} == {"new_loss.png", "new_gates.png", "old_loss.png",
                                         "old_gates.png"}
    (mean_label, means), (std_label, stds) = figures["new_gates.png"]
    assert (mean_label, std_label) == ("mean z", "std of z")
    assert [line[:2] for line in means] == [(tuple(step), (0.5, 0.49, 0.5)),
                                            (tuple(step), (0.5, 0.5, 0.49))]
    assert [line[:2] for line in stds] == [(tuple(step), (0.02, 0.05, 0.1)),
                                           (tuple(step), (0.01, 0.01, 0.02))]
    assert [line[2] for line in means] == [line[2] for line in stds]  # one colour per gate
    assert [(label, len(lines)) for label, lines in figures["old_gates.png"]] == [("mean z", 1)]
    for name in ("new_gates.png", "old_gates.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = imread(png).shape[:2]
        assert width > 500 and height > 300


def test_parameter_count_of_bert_base():
    config = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
              "id2label": {0: "a", 1: "b", 2: "c"}}
    assert parameter_count(config) == 109_484_547  # BertForSequenceClassification, 3 labels


# ---- hand-built results stores: several tasks, precisions, a sweep ----------------------

MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "vocab_size": 100,
         "max_position_embeddings": 64, "type_vocab_size": 2}


def experiment(exp_dir, name, task, seed, method, results, **config):
    """An experiment folder as the training and evaluation scripts leave it (config.json,
    model_config.json, results_<split>.csv), written by hand: `results` maps a split to
    rows (step, amp, metric values...)."""
    import json
    folder = exp_dir / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": task, "seed": seed, "method": method,
                                                    **config}))
    labels = {"stsb": 1, "mnli": 3}.get(task, 2)
    (folder / "model_config.json").write_text(json.dumps(
        MODEL | {"id2label": {str(i): str(i) for i in range(labels)}}))
    for split, rows in results.items():
        pd.DataFrame([row | {"examples_per_s": 100.0 + row["step"], "device": "cpu"}
                      for row in rows]).to_csv(folder / f"results_{split}.csv", index=False)


def mnli(step, accuracy, amp="fp32"):
    return {"step": step, "amp": amp, "accuracy": accuracy, "macro_f1": accuracy - 0.01}


def acc(step, accuracy, amp="fp32"):
    return {"step": step, "amp": amp, "accuracy": accuracy}


def stsb(step, pearson, spearman, amp="fp32"):
    return {"step": step, "amp": amp, "pearson": pearson, "spearman": spearman}


def tables_of(markdown_text):
    """{section heading: [its tables as DataFrames]} of report.md."""
    sections, name, lines = {}, None, []
    for line in markdown_text.splitlines() + ["## end"]:
        if line.startswith("## "):
            if name:
                blocks, block = [], []
                for text in lines + [""]:
                    if text.startswith("|"):
                        block.append(text)
                    elif block:
                        cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in block]
                        blocks.append(pd.DataFrame(cells[2:], columns=cells[0]))
                        block = []
                sections[name] = blocks
            name, lines = line[3:], []
        else:
            lines.append(line)
    return sections


@pytest.fixture
def mixed(tmp_path):
    """MNLI, RTE and STS-B experiments: teachers and LAD students, two seeds of some, a
    sweep of --mu for LAD on RTE, fp32 and bf16 rows."""
    exp = tmp_path / "exp"
    # fp32 and bf16 rows of step 4: the fp32 one (0.80) counts, so step 2 (0.85) is best,
    # although the bf16 row of step 4 (0.90) is higher.
    experiment(exp, "teacher_mnli_s1", "mnli", 1, "teacher", {
        "dev_matched": [mnli(2, 0.85), mnli(4, 0.80), mnli(4, 0.90, "bf16")],
        "dev_mismatched": [mnli(2, 0.75), mnli(2, 0.95, "bf16"), mnli(4, 0.79)]})
    experiment(exp, "teacher_mnli_s2", "mnli", 2, "teacher", {
        "dev_matched": [mnli(2, 0.82), mnli(4, 0.84)],
        "dev_mismatched": [mnli(2, 0.80), mnli(4, 0.83)]})
    experiment(exp, "LAD_mnli_s1", "mnli", 1, "LAD", {
        "dev_matched": [mnli(2, 0.78), mnli(4, 0.79)],
        "dev_mismatched": [mnli(2, 0.77), mnli(4, 0.76)]}, teacher_exp="teacher_mnli_s1", tckpt=2)
    experiment(exp, "teacher_rte_s1", "rte", 1, "teacher", {"dev": [acc(2, 0.60), acc(4, 0.66)]})
    for seed, scores in ((1, (0.62, 0.64)), (2, (0.66, 0.60))):
        experiment(exp, f"LAD_rte_mu1_s{seed}", "rte", seed, "LAD",
                   {"dev": [acc(2, scores[0]), acc(4, scores[1])]}, mu=1)
    # Its best checkpoint has only a bf16 row: the report says so.
    experiment(exp, "LAD_rte_mu2_s1", "rte", 1, "LAD",
               {"dev": [acc(2, 0.61), acc(4, 0.70, "bf16")]}, mu=2)
    experiment(exp, "teacher_stsb_s1", "stsb", 1, "teacher",
               {"dev": [stsb(2, 0.5, 0.4), stsb(4, 0.8, 0.7)]})
    return exp


def test_report_one_table_per_task_and_glue_summary(mixed, capsys):
    report(build_parser().parse_args(["--exp_dir", str(mixed)]))
    out = capsys.readouterr().out
    sections = tables_of((mixed / "report.md").read_text())
    assert list(sections) == ["STS-B (stsb)", "MNLI (mnli)", "RTE (rte)", "GLUE summary"]
    for heading in sections:
        assert f"== {heading} ==" in out

    # One table per task, with that task's metrics and splits only.
    runs = {name: table for name, (table, _) in
            {h.split(" (")[1][:-1]: s for h, s in sections.items() if "(" in h}.items()}
    expected_columns = {
        "mnli": ["dev_matched accuracy", "dev_matched macro_f1", "dev_matched best accuracy",
                 "dev_mismatched accuracy", "dev_mismatched macro_f1",
                 "dev_mismatched best accuracy"],
        "rte": ["dev accuracy", "dev best accuracy"],
        "stsb": ["dev pearson", "dev spearman", "dev best pearson"]}
    for task, columns in expected_columns.items():
        table = runs[task]
        assert list(table.columns[:3]) == ["experiment", "method", "teacher"]
        scores = [c for c in table.columns if c.startswith("dev")]
        assert scores == columns, task  # no other task's columns

    # Every number is the results file's, at the checkpoint chosen on the dev split (the
    # fp32 row where a step has both), with the precision of its row.
    chosen = {"teacher_mnli_s1": (2, "fp32"), "teacher_mnli_s2": (4, "fp32"),
              "LAD_mnli_s1": (4, "fp32"), "teacher_rte_s1": (4, "fp32"),
              "LAD_rte_mu1_s1": (4, "fp32"), "LAD_rte_mu1_s2": (2, "fp32"),
              "LAD_rte_mu2_s1": (4, "bf16"), "teacher_stsb_s1": (4, "fp32")}
    for task, table in runs.items():
        for row in table.to_dict("records"):
            step, amp = chosen[row["experiment"]]
            assert (int(row["selected_step"]), row["amp"]) == (step, amp)
            for column in expected_columns[task]:
                split, metric = column.split(" ")[0], column.split(" ")[-1]
                results = pd.read_csv(mixed / row["experiment"] / f"results_{split}.csv")
                rows = results.loc[results["step"] == step]
                value = rows.loc[rows["amp"] == "fp32"] if "fp32" in set(rows["amp"]) else rows
                if " best " in column:
                    fp32_first = results.sort_values("amp", key=lambda a: a != "fp32",
                                                     kind="stable").drop_duplicates("step")
                    best = fp32_first.loc[fp32_first[metric].idxmax()]
                    assert row[column] == f"{best[metric]:.4f} @{best['step']}" + \
                        (" (bf16)" if best["amp"] == "bf16" else "")
                else:
                    assert float(row[column]) == pytest.approx(value[metric].iloc[0], abs=5e-5)
    assert runs["mnli"].set_index("experiment").loc["teacher_mnli_s1", "dev_matched accuracy"] \
        == "0.8500"  # not step 4's bf16 0.90
    assert runs["mnli"].set_index("experiment").loc["teacher_mnli_s1", "dev_mismatched accuracy"] \
        == "0.7500"  # the fp32 row of step 2, not its bf16 0.95
    assert runs["rte"].set_index("experiment").loc["LAD_rte_mu2_s1", "dev best accuracy"] \
        == "0.7000 @4 (bf16)"
    csv = pd.read_csv(mixed / "report.csv")  # every experiment, one row, with its task
    assert dict(zip(csv["experiment"], csv["task"])) == {
        name: name.split("_")[1] for name in chosen}
    assert csv.set_index("experiment").loc["teacher_stsb_s1", "dev spearman"] == pytest.approx(0.7)

    # Seed groups per task, with the task's GLUE score (×100): MNLI averages the matched
    # and mismatched accuracies, STS-B Pearson and Spearman.
    groups = {task: sections[heading][1] for heading, task in
              (("MNLI (mnli)", "mnli"), ("RTE (rte)", "rte"), ("STS-B (stsb)", "stsb"))}
    teacher = groups["mnli"].set_index("method").loc["teacher"]
    scores = [(0.85 + 0.75) / 2 * 100, (0.84 + 0.83) / 2 * 100]
    std = pd.Series(scores).std(ddof=1)
    assert teacher["GLUE score ×100"] == f"{sum(scores) / 2:.2f} ± {std:.2f} (n=2)"
    assert teacher["dev_matched accuracy"] == \
        f"{0.845:.4f} ± {pd.Series([0.85, 0.84]).std():.4f} (n=2)"
    assert groups["mnli"].set_index("method").loc["LAD", "GLUE score ×100"] == "77.50 (n=1)"
    assert groups["stsb"]["GLUE score ×100"].tolist() == ["75.00 (n=1)"]
    rte = groups["rte"].set_index("experiments")
    assert rte.loc["LAD_rte_mu1_s1, LAD_rte_mu1_s2", "GLUE score ×100"] == \
        f"65.00 ± {pd.Series([64.0, 66.0]).std():.2f} (n=2)"
    assert rte.loc["LAD_rte_mu2_s1", "amp"] == "bf16"

    # The summary: one row per method, the best group of a sweep (named), the average
    # over the tasks present, the missing ones named.
    summary = sections["GLUE summary"][0].set_index("method")
    assert list(summary.columns) == ["STS-B", "MNLI", "RTE", "GLUE average ×100"]
    assert summary.loc["teacher"].tolist() == [
        "75.00 (n=1)", "81.75 (n=2)", "66.00 (n=1)", f"{(75 + 81.75 + 66) / 3:.2f}"]
    assert summary.loc["LAD"].tolist() == ["", "77.50 (n=1)", "70.00 (n=1) [1]", ""]
    text = (mixed / "report.md").read_text()
    assert ("[1] LAD on RTE: 2 seed groups, the one with the best mean is used: LAD_rte_mu2_s1; "
            "the others: LAD_rte_mu1_s1, LAD_rte_mu1_s2 (65.00)") in text
    assert "LAD: no average (no GLUE score on STS-B)" in text
    assert ("GLUE tasks missing: CoLA, SST-2, MRPC, QQP, QNLI, WNLI; the average is over the 3 "
            "tasks present, not the official nine-task GLUE score.") in text
    assert "on the dev splits (not GLUE's test sets)" in text

    # --select_on another split: the best of its preferred (fp32) rows; --task keeps only
    # that task's table and summary column.
    report(build_parser().parse_args(["--exp_dir", str(mixed), "--task", "mnli",
                                      "--select_on", "dev_mismatched"]))
    sections = tables_of((mixed / "report_mnli.md").read_text())
    assert list(sections) == ["MNLI (mnli)", "GLUE summary"]
    table = sections["MNLI (mnli)"][0].set_index("experiment")
    assert table["selected_step"].to_dict() == {"LAD_mnli_s1": "2", "teacher_mnli_s1": "4",
                                                "teacher_mnli_s2": "4"}
    assert table.loc["teacher_mnli_s1", "dev_matched accuracy"] == "0.8000"  # fp32 of step 4
    assert "GLUE tasks missing: CoLA, SST-2, MRPC, STS-B, QQP, QNLI, RTE, WNLI" in \
        (mixed / "report_mnli.md").read_text()


def test_seed_groups_hold_only_runs_scored_on_the_same_rows(tmp_path, capsys):
    """Runs that differ only in --seed but were scored on different rows of the split (a
    subsampled dev file, say) are two groups, and the table says which rows each was
    scored on; where all were scored on the same rows the column is left out."""
    import json
    exp = tmp_path / "exp"
    for seed, rows, fingerprint in ((1, 277, "rows-a"), (2, 277, "rows-a"), (3, 100, "rows-b")):
        experiment(exp, f"LAD_rte_s{seed}", "rte", seed, "LAD", {"dev": [acc(2, 0.6 + seed / 100)]})
        described = exp / f"LAD_rte_s{seed}" / "eval_predictions" / "dev"
        described.mkdir(parents=True)
        (described / "rows.json").write_text(json.dumps({"rows": rows, "fingerprint": fingerprint}))
    report(build_parser().parse_args(["--exp_dir", str(exp)]))
    groups = tables_of((exp / "report.md").read_text())["RTE (rte)"][1]
    assert groups["experiments"].tolist() == ["LAD_rte_s1, LAD_rte_s2", "LAD_rte_s3"]
    assert groups["n"].tolist() == ["2", "1"]
    assert groups["scored on"].tolist() == ["277 rows, rows-a", "100 rows, rows-b"]
    (exp / "LAD_rte_s3" / "eval_predictions" / "dev" / "rows.json").write_text(
        json.dumps({"rows": 277, "fingerprint": "rows-a"}))
    report(build_parser().parse_args(["--exp_dir", str(exp)]))
    groups = tables_of((exp / "report.md").read_text())["RTE (rte)"][1]
    assert groups["experiments"].tolist() == ["LAD_rte_s1, LAD_rte_s2, LAD_rte_s3"]
    assert "scored on" not in groups.columns
