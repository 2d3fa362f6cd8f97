"""Issue 10: the authors' setup by default, no lost or silently wrong runs, and one clear
line for every user mistake. The contract of exit status and one-line message is checked
through the real entry scripts; the rest calls the entry functions in this process."""
import json
import os
import fcntl
import pty
import re
import struct
import signal
import subprocess
import sys
import termios
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, flags, run_script, scores, seed_flags
from forked import start_forked
from fine_tune import cli
from fine_tune.errors import Interrupted, UserError
from fine_tune.evaluation import evaluate_checkpoints, write_test_predictions
from fine_tune.experiment import Experiment
from fine_tune.lad import distil_lad, distil_partial_lad
from fine_tune.settings import Settings
from fine_tune.teacher import fine_tune_teacher
from fine_tune.training import loop as trainer, optim

TEACHER = ("--experiment teacher_base --model bert --ptrain_ver tiny-bert --task mnli --dataset train "
           "--num_class 3 --batch_size 16 --ckpt_step 5 --log_step 2 --lr 1e-3 --max_seq_len 64 "
           "--device_id -1 --seed 42 --total_step 10 --warmup_step 1")
# The seed's LAD command, only sizes, steps and the device changed.
LAD = ("--teacher_exp teacher_base --tckpt 10 --experiment LAD --model bert --task mnli "
       "--batch_size 16 --ckpt_step 2 --log_step 1 --d_model 32 --d_ff 64 --num_attention_heads 2 "
       "--num_hidden_layers 2 --total_step 3 --warmup_step 0 --device_id -1")
EVAL = "--experiment teacher_base --model bert --task mnli --dataset dev_matched --device_id -1"
FOLDER = "exp/teacher_base_bert_mnli"


def teacher(**changes):
    # Read-only settings, as the entry scripts pass them: a library change that wrote to
    # them would fail here.
    return fine_tune_teacher(Settings(**vars(cli.teacher_parser().parse_args(
        seed_flags(TEACHER, **changes)))))


def lad(*extra, **changes):
    return distil_lad(Settings(**vars(cli.lad_parser().parse_args(
        seed_flags(LAD, **changes) + list(extra)))))


@pytest.fixture
def here(workdir, monkeypatch):
    """The fixture's working folder as the current folder, as for a user in the project."""
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture
def trained(here):
    teacher()
    return here


def one_line_error(result, *expected, status=2):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), lines
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def tree(folder):
    """Every file under `folder` with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ---- faithful defaults --------------------------------------------------------------

def test_student_embeddings_are_random_with_a_max_seq_len_position_table(trained):
    """The authors' student: random embeddings (position table of max_seq_len rows); only
    the encoder layers and the pooler come from the pre-trained model. `copy` is ours."""
    from fine_tune.distillation import load_pretrained_encoder
    pretrained = load_pretrained_encoder("tiny-bert")
    lad()
    lad("--init_embeddings", "copy", experiment="LAD_copy")
    for name, rows, copied in (("LAD", 64, False), ("LAD_copy", 128, True)):
        folder = trained / "exp" / f"{name}_bert_mnli"
        assert json.loads((folder / "model_config.json").read_text())["max_position_embeddings"] == rows
        assert json.loads((folder / "config.json").read_text())["init_embeddings"] == \
            ("copy" if copied else "random")
        first = torch.load(folder / "model-2.pt", weights_only=True)  # after two small steps
        table = first["bert.embeddings.position_embeddings.weight"]
        assert table.shape == (rows, 32)
        start = pretrained.embeddings.position_embeddings.weight[:rows]
        assert (float((table - start.detach()).abs().max()) < 0.05) == copied
    # The encoder layers are copied either way (layer 2 of 4 for student layer 1).
    weights = torch.load(trained / "exp" / "LAD_bert_mnli" / "model-2.pt", weights_only=True)
    assert float((weights["bert.encoder.layer.0.output.dense.weight"]
                  - pretrained.encoder.layer[1].output.dense.weight.detach()).abs().max()) < 0.05


def test_partial_lad_with_other_gate_indices_follows_the_authors(trained):
    """--gate_indices 2 with a 4-layer teacher and 2-layer student: S_1 learns A_2 and S_2
    the raw H_4 (max(gate) + k); gate_config.json records it."""
    distil_partial_lad(cli.probing_parser().parse_args(seed_flags(
        LAD, experiment="partial") + ["--gate_indices", "2", "--student_indices", "1,2"]))
    gates = json.loads((trained / "exp" / "partial_bert_mnli" / "gate_config.json").read_text())
    assert gates["student_targets"] == {"S_1": "A_2", "S_2": "H_4"}


# ---- never save or keep a broken or foreign model -------------------------------------

def test_a_non_finite_gradient_with_a_finite_loss_stops_the_run_unsaved(here, monkeypatch):
    accumulate, calls = trainer.accumulate_gradients, [0]

    def poisoned(run, rows, accum_step, *statistics):
        calls[0] += 1
        terms = accumulate(run, rows, accum_step, *statistics)
        if calls[0] == 7:  # the loss stays finite; one gradient entry does not
            run.model.classifier.weight.grad[0, 0] = float("nan")
        return terms
    monkeypatch.setattr(trainer, "accumulate_gradients", poisoned)
    with pytest.raises(UserError, match=r"^step 7: the model's gradient is not finite \(the loss "
                                        r"was\); the run stopped without saving \(model-5.pt is the "
                                        r"last good checkpoint\)"):
        teacher(log_step=100)
    experiment = Experiment("exp", "teacher_base", "bert", "mnli")
    assert experiment.checkpoint_steps() == [5]
    assert all(torch.isfinite(v).all() for v in experiment.load_checkpoint(5).values())
    assert torch.load(experiment.path / "train_state.pt", weights_only=False)["step"] == 5


@pytest.mark.slow
def test_a_second_training_of_a_live_experiment_is_refused(trained):
    """The folder is held (flock) by a live run: the second run names it and changes nothing."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.write(fd, b'process %d on a-host' % os.getpid())\n"
        "print('locked', flush=True); time.sleep(60)\n"), f"{FOLDER}/.lock"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree(trained / FOLDER)
        for extra in (["--resume"], ["--overwrite"]):
            result = run_script("run_fine_tune.py", *flags(TEACHER), *extra, cwd=trained, check=False)
            one_line_error(result, f"{FOLDER} is being trained by process {holder.pid} on a-host",
                           "wait for it to end")
        assert tree(trained / FOLDER) == before
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: its lock went with it, though the file stays.
    assert (trained / FOLDER / ".lock").is_file()
    fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER) + ["--resume"]))


def test_a_run_never_overwrites_its_own_teacher(trained):
    before = tree(trained / FOLDER)
    for extra in ([], ["--overwrite"]):
        with pytest.raises(UserError, match="--experiment teacher_base is the teacher's own "
                                            "experiment .* choose another --experiment"):
            lad(*extra, experiment="teacher_base")
    assert tree(trained / FOLDER) == before


@pytest.mark.slow
def test_interrupt_names_the_step_and_resume_keeps_evaluation_points(here, monkeypatch):
    """Ctrl-C at step 7: the message says --resume continues from step 5; evaluation points
    logged meanwhile survive the resume, which adds no empty event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    step, count = optim.TrainableGroup.step, [0]

    def interrupted_step(self):
        step(self)
        count[0] += 1
        if count[0] == 7:
            raise KeyboardInterrupt
    monkeypatch.setattr(optim.TrainableGroup, "step", interrupted_step)
    with pytest.raises(Interrupted, match=r"^training of teacher_base_bert_mnli stopped at step 7 "
                                          r"of 10; to continue from step 5 \(its last checkpoint\), "
                                          r"run the same command with --resume$"):
        teacher()
    monkeypatch.setattr(optim.TrainableGroup, "step", step)
    evaluate_checkpoints(cli.eval_parser().parse_args(flags(EVAL)))
    # TensorBoard reads a folder's event files in name order, whose first key is the second
    # the file was made; a real resume is a new process, started later. Here, same process:
    time.sleep(1.1)
    fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER) + ["--resume"]))
    fine_tune_teacher(cli.teacher_parser().parse_args(flags(TEACHER) + ["--resume"]))  # done already
    log = here / FOLDER / "log"
    events = EventAccumulator(str(log / "eval" / "dev_matched"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/dev_matched/accuracy")] == [5]
    training = EventAccumulator(str(log))
    training.Reload()
    assert [e.step for e in training.Scalars("loss/ce")] == [2, 4, 6, 8, 10]
    for path in log.rglob("events.out.tfevents.*"):
        reader = EventAccumulator(str(path))
        reader.Reload()
        assert reader.Tags()["scalars"], f"empty event file {path}"


@pytest.mark.slow
def test_ctrl_c_through_the_script_says_how_to_resume(here):
    """A real SIGINT while the script trains (seen from its plain log lines)."""
    # (forked from this process, with Ctrl-C's default disposition, as in a terminal: a
    # shell's background job, e.g. `make test &`, inherits SIGINT ignored)
    process = start_forked("run_fine_tune.py",
                           *seed_flags(TEACHER, total_step=100000, ckpt_step=3, log_step=1), cwd=here)
    deadline = time.time() + 120
    while " step 4/100000 " not in process.stderr_so_far():
        assert process.poll() is None and time.time() < deadline, process.stderr_so_far()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    last = process.output()[1].strip().splitlines()[-1]
    assert re.fullmatch(r"error: training of teacher_base_bert_mnli stopped at step \d+ of 100000; "
                        r"to continue from step (3|6) \(its last checkpoint\), run the same "
                        r"command with --resume", last), last


def test_resume_restores_random_states_by_role_and_refits_the_optimiser(here, capsys):
    """A state saved on a GPU (by role) or by CUDA index (older runs) resumes on a machine
    without one: a note, no IndexError; an unfused AdamW state loads as a fused one on the CPU."""
    from fine_tune.training import FineTuning, TrainableGroup, TrainingRun
    from fine_tune.training.state import set_rng_state
    run = TrainingRun(None, None, torch.nn.Linear(2, 2), torch.device("cpu"), FineTuning(), None)
    base = {"torch": torch.get_rng_state(), "python": __import__("random").getstate(),
            "numpy": __import__("numpy").random.get_state()}
    set_rng_state(run, base | {"cuda_by_role": {"student": torch.zeros(16, dtype=torch.uint8)}})
    assert "the student now runs on another kind of device" in capsys.readouterr().out
    set_rng_state(run, base | {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 2})  # no IndexError
    settings = optim.OptimizerSettings(1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 10, 1)
    group = TrainableGroup("model", run.model, settings)
    state = group.state_dict()
    for saved in state["optimizer"]["param_groups"]:
        saved["fused"] = None  # as written by a run before AdamW was fused on the CPU
    group.load_state_dict(state)
    assert all(g["fused"] for g in group.optimizer.param_groups)  # follows the device now
    run.model(torch.ones(1, 2)).sum().backward()
    group.step()


# ---- evaluation ----------------------------------------------------------------------

def test_evaluation_checks_it_can_write_before_computing(trained, monkeypatch):
    import fine_tune.evaluation as evaluation
    monkeypatch.setattr(evaluation, "predict", lambda *a, **k: pytest.fail("computed first"))
    (trained / FOLDER / "predictions").write_text("a file where the folder goes")
    with pytest.raises(UserError, match=f"cannot write {FOLDER}/predictions/10/MNLI-m.tsv"):
        write_test_predictions(cli.predict_parser().parse_args(flags(
            "--experiment teacher_base --dataset test_matched --ckpt 10 --device_id -1")))
    (trained / FOLDER / "results_dev_matched.csv").mkdir()
    with pytest.raises(UserError, match=f"cannot write {FOLDER}/results_dev_matched.csv"):
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(EVAL)))
    assert not (trained / FOLDER / "log" / "eval").exists()


def test_submission_labels_follow_the_models_own_id2label(trained):
    """A copy of the teacher whose classes are stored in another order (id2label and the
    classifier's rows permuted together) gives the same predictions and accuracy."""
    import shutil
    shutil.copytree(trained / FOLDER, trained / "exp" / "permuted_bert_mnli")
    folder = trained / "exp" / "permuted_bert_mnli"
    config = json.loads((folder / "model_config.json").read_text())
    order = [2, 0, 1]  # new class i is old class order[i]
    config["id2label"] = {str(i): config["id2label"][str(old)] for i, old in enumerate(order)}
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    (folder / "model_config.json").write_text(json.dumps(config))
    for step in (5, 10):
        weights = torch.load(folder / f"model-{step}.pt", weights_only=True)
        for name in ("classifier.weight", "classifier.bias"):
            weights[name] = weights[name][order]
        torch.save(weights, folder / f"model-{step}.pt")
    for experiment in ("teacher_base", "permuted"):
        write_test_predictions(cli.predict_parser().parse_args(flags(
            f"--experiment {experiment} --dataset test_matched --ckpt 10 --device_id -1")))
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(EVAL.replace("teacher_base", experiment))))
    read = lambda name: (trained / "exp" / name).read_text()  # noqa: E731
    assert read("permuted_bert_mnli/predictions/10/MNLI-m.tsv") == \
        read("teacher_base_bert_mnli/predictions/10/MNLI-m.tsv")
    pd.testing.assert_frame_equal(scores(trained / "exp/permuted_bert_mnli/results_dev_matched.csv"),
                                  scores(trained / "exp/teacher_base_bert_mnli/results_dev_matched.csv"))


@pytest.mark.slow
def test_two_evaluations_at_once_never_mix_a_results_file(trained):
    processes = [start_forked("run_fine_tune_eval.py", *flags(EVAL), cwd=trained) for _ in range(2)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0], [p.output()[1][-2000:] for p in processes]
    results = pd.read_csv(trained / FOLDER / "results_dev_matched.csv")
    assert list(results["step"]) == [5, 10]
    assert not list((trained / FOLDER).glob(".*.tmp"))


def test_two_writability_checks_at_once_do_not_remove_each_others_probe(tmp_path, monkeypatch):
    """Two evaluations starting together both check that they can write their results
    file; one's probe must not be the other's (a shared name: the second unlink failed and
    that evaluation stopped with 'cannot write')."""
    from fine_tune import experiment as experiment_module
    folder = tmp_path / "exp" / "x_bert_mnli"
    folder.mkdir(parents=True)
    write = experiment_module.atomic_write_text

    def write_then_the_other_process_removes_its_probe(text, path):
        write(text, path)
        # the other evaluation, finishing its own check, removes the probe of the old
        # shared name (".results_dev_matched.csv.check")
        (path.parent / ".results_dev_matched.csv.check").unlink(missing_ok=True)
    monkeypatch.setattr(experiment_module, "atomic_write_text",
                        write_then_the_other_process_removes_its_probe)
    Experiment(tmp_path / "exp", "x", "bert", "mnli").check_writable("results_dev_matched.csv")
    assert not list(folder.glob(".*.check"))


# ---- one clear line for every user mistake --------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["--experimnet", "teacher_base", "--dataset", "dev_matched"],
     "unrecognized argument --experimnet; did you mean --experiment?"),
    (["--experiment", "teacher_base_bert_mnli", "--dataset", "dev_matched", "--device_id", "-1"],
     "--experiment teacher_base_bert_mnli is a folder name; --experiment takes the experiment's "
     "name without _bert_mnli: use --experiment teacher_base"),
    (["--experiment", "teacher_base", "--dataset", "dev_matched", "--device_id", "-1",
      "--exp_dir", "elsewhere"],
     "experiment 'teacher_base' not found: no elsewhere/teacher_base_bert_mnli/config.json under "
     "--exp_dir elsewhere; it has none for this model and task"),
])
def test_experiment_lookup_mistakes(trained, argv, expected):
    result = run_script("run_fine_tune_eval.py", *argv, cwd=trained, check=False)
    one_line_error(result, expected)


@pytest.mark.parametrize("damage, script, expected", [
    (lambda f: (f / "config.json").write_text("{not json"), "run_fine_tune_eval.py",
     "config.json is damaged"),
    (lambda f: (f / "model_config.json").unlink(), "run_lad_distil.py",
     "model_config.json is missing"),
    (lambda f: (f / "model_config.json").write_bytes(b"\xff\xfe junk"), "run_fine_tune_eval.py",
     "model_config.json is damaged"),
])
def test_damaged_experiment_configs(trained, damage, script, expected):
    damage(trained / FOLDER)
    before = tree(trained / "exp")
    result = run_script(script, *flags(EVAL if script == "run_fine_tune_eval.py" else LAD),
                        cwd=trained, check=False)
    one_line_error(result, f"{FOLDER}/{expected}")
    assert tree(trained / "exp") == before


def test_interrupt_before_the_first_checkpoint(here, monkeypatch):
    monkeypatch.setattr(optim.TrainableGroup, "step", lambda self: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(Interrupted, match=r"stopped at step 1 of 10, before its first checkpoint; "
                                          r"the same command with --resume starts again from step 0$"):
        teacher()


def test_a_config_missing_a_setting_or_a_mistyped_architecture(trained):
    config = json.loads((trained / FOLDER / "config.json").read_text())
    del config["max_seq_len"]
    (trained / FOLDER / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config.json is damaged \(no 'max_seq_len'\)"):
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(EVAL)))
    with pytest.raises(UserError, match=r"config.json is damaged \(no 'max_seq_len'\)"):
        lad()
    config["max_seq_len"] = 64
    (trained / FOLDER / "config.json").write_text(json.dumps(config))
    model_config = json.loads((trained / FOLDER / "model_config.json").read_text())
    (trained / FOLDER / "model_config.json").write_text(json.dumps(model_config | {"hidden_size": "x"}))
    with pytest.raises(UserError, match=r"model_config.json is damaged \("):
        evaluate_checkpoints(cli.eval_parser().parse_args(flags(EVAL)))
    with pytest.raises(UserError, match=r"model_config.json is damaged \("):
        lad()


def test_pkd_skip_depth_is_part_of_the_one_message(trained):
    from fine_tune.pkd import distil_pkd
    argv = seed_flags(LAD, experiment="PKD", d_ff=128, num_hidden_layers=1) + ["--pkd_loss", "pkd-skip"]
    with pytest.raises(UserError, match=r"^the student does not fit .*--num_hidden_layers 1 is outside "
                                        r"what this method takes for the teacher's 4 layers \(2 to 4\); "
                                        r"use --d_ff 64 --num_hidden_layers 2$"):
        distil_pkd(cli.pkd_parser().parse_args(argv))


def test_a_teacher_without_checkpoints_says_so(trained):
    for path in (trained / FOLDER).glob("model-*.pt"):
        path.unlink()
    result = run_script("run_lad_distil.py", *flags(LAD), cwd=trained, check=False)
    line = one_line_error(result, "teacher teacher_base_bert_mnli has no checkpoints yet")
    assert "(none)" not in line


def test_a_student_that_does_not_fit_gets_every_fix_in_one_line(trained):
    """The seed's partial LAD student (768 wide, 6 layers, gates 2..10) on a 4-layer,
    32-wide teacher: one refusal listing every flag, and the listed flags then run."""
    seed = ("--probing_exp partial_lad --teacher_exp teacher_base --tckpt 10 --experiment partial "
            "--total_step 2 --warmup_step 0 --device_id -1")
    result = run_script("run_probing_lad.py", *flags(seed), cwd=trained, check=False)
    line = one_line_error(result, "the student does not fit the teacher (4 layers, hidden size 32")
    fixes = line.split("; use ")[-1].split()
    assert fixes == ["--d_model", "32", "--d_ff", "64", "--num_attention_heads", "2",
                     "--num_hidden_layers", "2", "--gate_indices", "2", "--student_indices", "1,2"]
    assert not (trained / "exp" / "partial_bert_mnli").exists()
    distil_partial_lad(cli.probing_parser().parse_args(flags(seed) + fixes))


@pytest.mark.slow
def test_help_and_flag_errors_answer_without_importing_torch(here):
    probe = ("import os, runpy, sys\n"
             "sys.argv = sys.argv[1:]\n"
             "sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python script` does\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    for script in ("run_fine_tune.py", "run_lad_distil.py", "run_lad_no_distil.py",
                   "run_probing_lad.py", "run_alp_distil.py", "run_pkd_distill.py",
                   "run_kd_distil.py", "run_tinybert_distil.py", "run_minilm_distil.py",
                   "run_fine_tune_eval.py", "generate_test_prediction.py"):
        for argv in (["--help"], ["--experiment", "x", "--seed", "-1"]):
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", probe, str(ROOT / script), *argv],
                                    capture_output=True, text=True, cwd=here)
            assert time.perf_counter() - started < 1.0, script
            assert result.stdout.strip().splitlines()[-1] == "False False", (script, result.stdout)


def test_settings_are_read_only():
    settings = Settings(**vars(cli.lad_parser().parse_args(flags(LAD))))
    with pytest.raises(AttributeError, match="settings are read-only"):
        settings.max_seq_len = 64
    from fine_tune.settings import derive
    derived = derive(settings, max_seq_len=64)
    assert derived.max_seq_len == 64 and not hasattr(settings, "max_seq_len")


def test_device_left_out_uses_gpu_0_and_says_so(monkeypatch, capsys):
    from fine_tune.modeling import resolve_device
    assert resolve_device(None) == torch.device("cpu")  # no GPU here: the CPU, silently
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    assert resolve_device(None) == torch.device("cuda", 0)
    assert capsys.readouterr().out.strip() == ("--device_id not given: running on GPU 0 (NVIDIA "
                                               "H200); pass --device_id -1 to use the CPU")
    assert resolve_device(-1) == torch.device("cpu")
    assert resolve_device(None, "--tdevice_id", default=torch.device("cpu")) == torch.device("cpu")


# ---- logs ----------------------------------------------------------------------------

@pytest.mark.slow
def test_log_file_gets_plain_lines_and_a_terminal_gets_bars(here):
    train = here / "data" / "fine_tune" / "MNLI" / "train.tsv"  # with a byte-order mark, too
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    result = run_script("run_fine_tune.py", *seed_flags(TEACHER, total_step=4), cwd=here)
    lines = [line for line in result.stderr.splitlines() if " step " in line]
    assert len(lines) == 2 and "\r" not in result.stderr and "\x1b" not in result.stderr
    assert lines[-1].startswith("teacher_base_bert_mnli step 4/4  loss ")
    assert " ce " in lines[-1] and "lr/model " in lines[-1] and lines[-1].endswith(" examples/s")
    evaluation = run_script("run_fine_tune_eval.py", *flags(EVAL), cwd=here)
    assert "\r" not in evaluation.stderr and "\x1b" not in evaluation.stderr
    assert "model-4.pt: accuracy" in evaluation.stderr
    # In a terminal: tqdm's bar, redrawn in place.
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = start_forked("run_fine_tune.py", *seed_flags(TEACHER, total_step=2, experiment="tty"),
                           cwd=here, stderr_fd=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0
    assert b"\r" in output and b"2/2" in output and b" step 2/2 " not in output
