"""--eval_during_training, --keep_checkpoints, train_log.csv and LAD's gate values: a run
that evaluates and prunes as it goes, killed and resumed, ends as a plain run does."""
import shutil

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_script, scores, seed_flags
from fine_tune import cli
from fine_tune.evaluation import evaluate_checkpoints
from fine_tune.experiment import Experiment
from fine_tune.lad import GatedObjective, lad_no_targets, lad_targets
from fine_tune.settings import Settings
from test_resume import LAD, TEACHER, assert_bitwise_equal, run_hooked, weights

DURING = ["--eval_during_training", "dev_matched,dev_mismatched", "--keep_checkpoints", "1"]


@pytest.mark.slow
def test_lad_evaluated_and_pruned_during_training_resumes_bitwise(workdir):
    work = workdir
    run_script("run_fine_tune.py", *seed_flags(TEACHER), cwd=work)
    shutil.copytree(work / "exp", work / "ref")
    run_script("run_lad_distil.py", *seed_flags(LAD, exp_dir="ref"), cwd=work)  # no new flags
    lad = seed_flags(LAD, ckpt_step=3) + DURING
    killed = run_hooked("kill_after_step", 8, "run_lad_distil.py", lad, work)
    assert killed.returncode == -9
    folder, reference = work / "exp" / "LAD_bert_mnli", work / "ref" / "LAD_bert_mnli"
    # Killed after step 8: step 6's checkpoint was evaluated, then step 3's pruned.
    assert scores(folder / "results_dev_matched.csv")["step"].tolist() == [3, 6]
    resumed = run_script("run_lad_distil.py", *lad, "--resume", cwd=work)
    assert "resuming LAD_bert_mnli from step 6" in resumed.stdout

    # Training is unchanged by evaluating, pruning, the kill and the resume.
    for kind in ("model", "gate"):
        assert_bitwise_equal(weights(folder, 14, kind), weights(reference, 14, kind))

    # Every checkpoint was evaluated once per split; the most recent and the best on the
    # first split are kept (model and gates), the others deleted.
    dev = scores(folder / "results_dev_matched.csv")
    assert dev["step"].tolist() == [3, 6, 9, 12, 14]
    assert scores(folder / "results_dev_mismatched.csv")["step"].tolist() == [3, 6, 9, 12, 14]
    best = int(dev.loc[dev["accuracy"].idxmax(), "step"])
    kept = sorted({best, 14})
    assert Experiment(work / "exp", "LAD", "bert", "mnli").checkpoint_steps() == kept
    assert sorted(int(p.stem.split("-")[1]) for p in folder.glob("gate-*.pt")) == kept
    # The rows are what run_fine_tune_eval.py --ckpt gives for a kept checkpoint.
    evaluate_checkpoints(Settings(**vars(cli.eval_parser().parse_args([
        "--experiment", "LAD", "--dataset", "dev_matched", "--ckpt", "14", "--device_id", "-1",
        "--data_dir", str(work / "data" / "fine_tune"), "--exp_dir", str(work / "exp")]))))
    pd.testing.assert_frame_equal(scores(folder / "results_dev_matched.csv"), dev)
    events = EventAccumulator(str(folder / "log" / "eval" / "dev_matched")).Reload()
    points = {e.step: e.value for e in events.Scalars("eval/dev_matched/accuracy")}
    assert points == pytest.approx(dict(zip(dev["step"], dev["accuracy"])))

    # train_log.csv: one row per --log_step, the killed run's rows past step 6 replaced,
    # equal to the uninterrupted run's; every gate's mean z, in (0, 1).
    log, reference_log = (pd.read_csv(f / "train_log.csv").drop(columns="examples_per_s")
                          for f in (folder, reference))
    assert log["step"].tolist() == [3, 6, 9, 12, 14]
    pd.testing.assert_frame_equal(log, reference_log)
    gates = [c for c in log.columns if c.startswith("gate_z/")]
    assert gates == ["gate_z/H_2", "gate_z/H_3", "gate_z/H_4"]  # 4-layer teacher: A_2 .. A_4
    assert ((log[gates] > 0) & (log[gates] < 1)).all().all()
    spreads = [c for c in log.columns if c.startswith("gate_z_std/")]  # and z's spread
    assert spreads == ["gate_z_std/H_2", "gate_z_std/H_3", "gate_z_std/H_4"]
    assert ((log[spreads] > 0) & (log[spreads] < 0.5)).all().all()
    events = EventAccumulator(str(reference / "log")).Reload()
    for tag in ("gate_z/H_3", "gate_z_std/H_3"):
        assert [e.step for e in events.Scalars(tag)] == [3, 6, 9, 12, 14]
        assert events.Scalars(tag)[-1].value == pytest.approx(log[tag].iloc[-1])


@pytest.mark.slow
def test_a_kill_while_a_checkpoint_is_scored_loses_no_training(workdir):
    """The training state is written before a checkpoint is scored: killed while scoring a
    middle checkpoint or the last one, --resume scores what is missing and trains on from
    that checkpoint (never from step 0), to the uninterrupted weights."""
    work = workdir
    # (logs at the checkpoints: a log interval that spans a resume counts only its steps)
    run_script("run_fine_tune.py", *seed_flags(TEACHER, exp_dir="ref", log_step=5), cwd=work)
    teacher = seed_flags(TEACHER, log_step=5) + ["--eval_during_training", "dev_matched,dev_mismatched"]
    folder = work / "exp" / "teacher_base_bert_mnli"
    # Scorings: 5 m, 5 mm, 10 m, 10 mm (killed: dev_matched has step 10, dev_mismatched not).
    assert run_hooked("kill_during_scoring", 4, "run_fine_tune.py", teacher, work).returncode == -9
    assert scores(folder / "results_dev_matched.csv")["step"].tolist() == [5, 10]
    assert scores(folder / "results_dev_mismatched.csv")["step"].tolist() == [5]
    # Resumed from step 10: 10 mm, then 14 m (killed: the last checkpoint, saved, unscored).
    resumed = run_hooked("kill_during_scoring", 2, "run_fine_tune.py", [*teacher, "--resume"], work)
    assert resumed.returncode == -9
    assert "resuming teacher_base_bert_mnli from step 10" in resumed.stdout
    assert "model-10.pt was saved but not scored on dev_mismatched" in resumed.stdout
    # The last resume trains nothing: it scores step 14 on both splits and ends.
    finished = run_script("run_fine_tune.py", *teacher, "--resume", cwd=work)
    assert "resuming teacher_base_bert_mnli from step 14" in finished.stdout
    assert "model-14.pt was saved but not scored on dev_matched, dev_mismatched" in finished.stdout
    for split in ("dev_matched", "dev_mismatched"):
        assert scores(folder / f"results_{split}.csv")["step"].tolist() == [5, 10, 14]
    reference = work / "ref" / "teacher_base_bert_mnli"
    for step in (5, 10, 14):
        assert_bitwise_equal(weights(folder, step), weights(reference, step))
    log, reference_log = (pd.read_csv(f / "train_log.csv").drop(columns="examples_per_s")
                          for f in (folder, reference))
    pd.testing.assert_frame_equal(log, reference_log)


def test_gate_statistics_are_each_gates_mean_and_std_of_z():
    torch.manual_seed(0)
    args = Settings(mu=1.0, hard_weight=0.5, soft_weight=0.5, softmax_temp=10.0, task="mnli")
    cpu = torch.device("cpu")
    for targets, names in ((lad_targets(6, 3), ["H_2", "H_3", "H_4", "H_5", "H_6"]),
                           (lad_no_targets(6, 3), ["H_2", "H_4", "H_6"])):
        objective = GatedObjective(args, targets, cpu, cpu, d_model=8, max_seq_len=5)
        assert objective.statistics() == {}  # nothing before the first forward
        teacher = [torch.randn(3, 5, 8) for _ in range(6)]
        objective.hidden_terms([torch.randn(3, 5, 8) for _ in range(3)], teacher)
        vectors = objective.statistics()  # one vector per tag, named when logged
        assert set(vectors) == {"gate_z", "gate_z_square"}
        assert all(v.shape == (len(names),) and v.dtype == torch.float32 for v in vectors.values())
        logged = objective.interval_statistics({tag: v[None] for tag, v in vectors.items()})  # 1 step
        statistics = objective.name_statistics({tag: v.tolist() for tag, v in logged.items()})
        assert list(statistics) == [f"{tag}/{name}" for name in names
                                    for tag in ("gate_z", "gate_z_std")]  # each mean beside its std
        # By hand: gate g's z = sigmoid(W x + b) on its "previous" input.
        if targets[0][0] == "gate":
            previous = [teacher[t[1] - 1] for t in targets]
        else:
            previous, aggregate = [], teacher[0]
            for gate, layer in zip(objective.gates, teacher[1:]):
                previous.append(aggregate)
                aggregate = gate(aggregate, layer)
        for gate, name, x in zip(objective.gates, names, previous):
            z = torch.sigmoid(gate.linear(x)).detach().double()  # (batch, tokens, width)
            mean = z.sum() / z.numel()
            std = (((z - mean) ** 2).sum() / z.numel()).sqrt()  # population std over all of z
            assert statistics[f"gate_z/{name}"] == pytest.approx(mean.item(), abs=1e-6)
            assert statistics[f"gate_z_std/{name}"] == pytest.approx(std.item(), abs=1e-6)
            assert std > 0.01  # a real spread, not a constant


def test_logged_gate_spread_is_the_hand_computed_std_of_z(workdir, monkeypatch):
    """train_log.csv's gate_z_std/H_i (and gate_z/H_i) for a LAD run with --accum_step 2 and
    a last --log_step interval of one step: each step's population std of z over its whole
    batch (both micro-batches), tokens and width, averaged over the interval's steps,
    computed by hand from every z the gates produced."""
    from fine_tune.lad import HighwayGate, distil_lad
    from fine_tune.teacher import fine_tune_teacher
    monkeypatch.chdir(workdir)
    fine_tune_teacher(Settings(**vars(cli.teacher_parser().parse_args(seed_flags(
        TEACHER, total_step=2, ckpt_step=2, log_step=2, warmup_step=1, batch_size=8)))))
    recorded = []  # (gate, z) of every gate forward, in order
    forward = HighwayGate.forward

    def recording(self, previous, current):
        with torch.no_grad():
            recorded.append((self, torch.sigmoid(self.linear(previous)).double()))
        return forward(self, previous, current)
    monkeypatch.setattr(HighwayGate, "forward", recording)
    distil_lad(Settings(**vars(cli.lad_parser().parse_args(seed_flags(
        LAD, tckpt=2, total_step=5, ckpt_step=5, log_step=2, accum_step=2, batch_size=8,
        warmup_step=1)))))

    gates = list(dict.fromkeys(gate for gate, _ in recorded))  # chain order: H_2, H_3, H_4
    names = ["H_2", "H_3", "H_4"]
    log = pd.read_csv(workdir / "exp" / "LAD_bert_mnli" / "train_log.csv")
    assert log["step"].tolist() == [2, 4, 5]
    columns = [c for c in log.columns if c.startswith("gate_z")]
    assert columns == [f"{tag}/{name}" for name in names for tag in ("gate_z", "gate_z_std")]
    for gate, name in zip(gates, names):
        zs = [z for g, z in recorded if g is gate]
        assert len(zs) == 5 * 2  # 5 steps of 2 micro-batches
        per_step = {"gate_z": [], "gate_z_std": []}
        for step in range(5):
            z = torch.cat(zs[2 * step:2 * step + 2])  # the step's batch: its 2 micro-batches
            mean = z.sum() / z.numel()
            per_step["gate_z"].append(mean)
            per_step["gate_z_std"].append((((z - mean) ** 2).sum() / z.numel()).sqrt())
        for tag, values in per_step.items():
            expected = [(values[0] + values[1]) / 2, (values[2] + values[3]) / 2, values[4]]
            assert log[f"{tag}/{name}"].tolist() == pytest.approx([v.item() for v in expected],
                                                                  rel=1e-5), (tag, name)
    events = EventAccumulator(str(workdir / "exp" / "LAD_bert_mnli" / "log")).Reload()
    assert [e.value for e in events.Scalars("gate_z_std/H_3")] == \
        pytest.approx(log["gate_z_std/H_3"].tolist(), rel=1e-6)


@pytest.mark.parametrize("flag, message", [
    (["--eval_during_training", "test_matched"], "argument --eval_during_training: expected "
     "labelled splits separated by commas"),
    (["--eval_during_training", "dev_matched,dev_matched"], "names a split twice"),
    (["--keep_checkpoints", "0"], "argument --keep_checkpoints: must be a positive integer"),
])
def test_bad_during_training_flags_are_one_line(workdir, flag, message):
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER), *flag, cwd=workdir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1




def test_the_best_step_ignores_scores_that_are_not_numbers():
    """A correlation of constant predictions is NaN: never "best", and no crash when all are."""
    from fine_tune.results import best_step
    nan = float("nan")
    assert best_step(pd.DataFrame({"step": [2, 4, 6], "pearson": [nan, 0.3, 0.1]}), "pearson") == 4
    assert best_step(pd.DataFrame({"step": [2, 4], "pearson": [nan, nan]}), "pearson") is None
