"""python -m fine_tune.export: a checkpoint as a Hugging Face model folder that
AutoModelForSequenceClassification and pipeline load offline, with our logits."""
import json

import numpy as np
import pytest
import torch

from conftest import flags
from fine_tune import cli
from fine_tune.errors import UserError
from fine_tune.export import build_parser, export

TEACHER = ("--experiment teacher_base --ptrain_ver tiny-bert --batch_size 16 --ckpt_step 2 "
           "--log_step 2 --lr 1e-3 --max_seq_len 64 --device_id -1 --total_step 4 --warmup_step 1")


@pytest.fixture
def trained(workdir, monkeypatch):
    from fine_tune.teacher import fine_tune_teacher
    monkeypatch.chdir(workdir)
    fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER)))
    return workdir


def test_export_loads_in_transformers_with_our_logits(trained):
    from transformers import AutoModelForSequenceClassification, pipeline
    from fine_tune.data import load_tokenized
    from fine_tune.evaluation import evaluate_checkpoints, predict
    from fine_tune.modeling import load_tokenizer
    with pytest.raises(UserError, match=r"--ckpt best: .*results_dev_matched.csv not found.*"
                                        r"run_fine_tune_eval.py --experiment teacher_base"):
        export(build_parser().parse_args(flags("--experiment teacher_base --ckpt best --out hf")))
    assert not (trained / "hf").exists()
    results = evaluate_checkpoints(cli.eval_parser().parse_args(flags(
        "--experiment teacher_base --dataset dev_matched --device_id -1")))
    best = int(results.loc[results["accuracy"].idxmax(), "step"])
    export(build_parser().parse_args(flags("--experiment teacher_base --ckpt best --out hf")))
    folder = trained / "hf"
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= \
        {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification"
    assert list(config["id2label"].values()) == ["contradiction", "entailment", "neutral"]
    card = (folder / "README.md").read_text()
    assert f"checkpoint {best}" in card and "dev_matched accuracy" in card

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    data = load_tokenized(trained / "data" / "fine_tune", "mnli", "dev_matched",
                          load_tokenizer(folder), 64)
    ours = predict(model, data, 16, torch.device("cpu"))  # our batching and masks
    with torch.no_grad():
        batch = data.batch(torch.arange(len(data)))
        batch.pop("labels")
        theirs = model(**batch).logits.numpy()  # transformers' own path, 2D mask
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    state = torch.load(trained / "exp" / "teacher_base_bert_mnli" / f"model-{best}.pt", weights_only=True)
    assert torch.equal(model.classifier.weight, state["classifier.weight"])
    classify = pipeline("text-classification", model=str(folder), device=-1)
    out = classify({"text": "a man is playing", "text_pair": "a woman sings"})
    out = out[0] if isinstance(out, list) else out
    assert out["label"] in {"contradiction", "entailment", "neutral"}
    with pytest.raises(UserError, match="--out hf already exists and is not empty"):
        export(build_parser().parse_args(flags("--experiment teacher_base --ckpt 2 --out hf")))


def test_evaluation_of_one_checkpoint_merges_into_the_results(trained, capsys):
    import pandas as pd
    from fine_tune.evaluation import evaluate_checkpoints
    evaluate = "--experiment teacher_base --dataset dev_matched --device_id -1"
    evaluate_checkpoints(cli.eval_parser().parse_args(flags(evaluate)))
    path = trained / "exp" / "teacher_base_bert_mnli" / "results_dev_matched.csv"
    table = pd.read_csv(path)
    assert list(table["step"]) == [2, 4]
    table.loc[table["step"] == 2, "accuracy"] = 0.123  # a marker: step 2 is not evaluated again
    fresh_4 = float(table.loc[table["step"] == 4, "accuracy"].iloc[0])
    table.loc[table["step"] == 4, "accuracy"] = 0.0
    table.to_csv(path, index=False)
    capsys.readouterr()
    evaluate_checkpoints(cli.eval_parser().parse_args(flags(evaluate + " --ckpt 4")))
    merged = pd.read_csv(path)
    assert list(merged["step"]) == [2, 4]
    assert merged.loc[0, "accuracy"] == pytest.approx(0.123)
    assert merged.loc[1, "accuracy"] == pytest.approx(fresh_4)
    out = capsys.readouterr().out
    assert " parameters; " in out and " examples/s on cpu)" in out
    with pytest.raises(UserError, match=r"model-99.pt not found; .* checkpoints at steps 2, 4: "
                                        r"pick one with --ckpt"):
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(evaluate + " --ckpt 99")))
