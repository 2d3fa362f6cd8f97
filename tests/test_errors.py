"""Bad input through the real entry scripts: one line on stderr naming the fix, exit
status 2, no traceback, and nothing written under exp/."""
import pytest

from conftest import flags, run_script, seed_flags as with_flag

TEACHER = ("--experiment teacher_base --model bert --ptrain_ver tiny-bert --task mnli "
           "--dataset train --num_class 3 --batch_size 32 --ckpt_step 5 --log_step 2 "
           "--max_seq_len 128 --device_id -1 --total_step 4 --warmup_step 1")


def assert_clean_failure(result, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for text in expected:
        assert text in last, last


def exp_files(workdir):
    return sorted(p.relative_to(workdir) for p in (workdir / "exp").rglob("*")) \
        if (workdir / "exp").exists() else []


TEACHER_CASES = {
    "cuda id on a machine without CUDA": (dict(device_id=1), ["--device_id 1", "--device_id -1"]),
    "num_class does not match the task": (dict(num_class=2), ["--num_class 2", "use --num_class 3"]),
    "warmup longer than training": (dict(warmup_step=9), ["--warmup_step 9", "--total_step 4"]),
    "batch not divisible by accumulation": (dict(accum_step=5), ["--batch_size 32", "--accum_step 5"]),
    "unknown pre-trained model": (dict(ptrain_ver="no-such-bert-xyz"),
                                  ["no-such-bert-xyz", "local Hugging Face model folder"]),
    "sequence longer than the position limit": (dict(max_seq_len=512), ["--max_seq_len 512", "(128)"]),
    "unknown dataset name": (dict(dataset="validation"), ["--dataset", "invalid choice: 'validation'",
                                                          "--help"]),
    "a split the task lacks": (dict(dataset="dev"), ["--task mnli has no split 'dev'; its splits are "
                                                     "train, dev_matched, dev_mismatched"]),
    "unknown task": (dict(task="squad"), ["--task", "invalid choice: 'squad'"]),
    "negative step count": (dict(total_step=-3), ["--total_step", "positive integer"]),
    "no room for a sentence pair": (dict(max_seq_len=4), ["--max_seq_len 4", "at least 8"]),
    "infinite learning rate": (dict(lr="inf"), ["--lr", "must be > 0, got inf"]),
    "an abbreviated flag": (dict(total="6"), ["unrecognized argument --total; did you mean --total_step?"]),
    "a negative seed": (dict(seed=-1), ["--seed", "must be in [0, 2^32 - 1], got -1"]),
    "a seed past 2^32 - 1": (dict(seed=2 ** 32), ["--seed", "got 4294967296"]),
    "the folder's name as a new experiment": (
        dict(experiment="teacher_base_bert_mnli"),
        ["--experiment teacher_base_bert_mnli is a folder name", "use --experiment teacher_base"]),
    "an evaluation split the task lacks": (
        dict(eval_during_training="dev"),
        ["--eval_during_training dev: --task mnli has no labelled split 'dev'; use train or "
         "dev_matched or dev_mismatched"]),
}


@pytest.mark.parametrize("case", TEACHER_CASES)
def test_teacher_bad_flags(workdir, case):
    changes, expected = TEACHER_CASES[case]
    result = run_script("run_fine_tune.py", *with_flag(TEACHER, **changes), cwd=workdir, check=False)
    assert_clean_failure(result, *expected)
    assert exp_files(workdir) == []


def test_missing_data_prints_the_download_command(workdir):
    result = run_script("run_fine_tune.py", *with_flag(TEACHER, data_dir="nowhere"), cwd=workdir,
                        check=False)
    assert_clean_failure(result, "nowhere/MNLI/train.tsv not found",
                         "python -m fine_tune.download --data_dir nowhere")
    assert exp_files(workdir) == []


@pytest.mark.parametrize("line, expected", [
    ("0\t1\t2\tfiction\ta\tb\tc\td\tpremise\thypothesis\tneutral", "found 11"),
    ("0\t1\t2\tfiction\ta\tb\tc\td\tpremise\thypothesis\tneutral\tneutrall", "unknown label 'neutrall'"),
])
def test_bad_training_row_names_file_and_line(workdir, line, expected):
    path = workdir / "data" / "fine_tune" / "MNLI" / "train.tsv"
    lines = path.read_text().splitlines()
    lines[6] = line
    path.write_text("\n".join(lines) + "\n")
    result = run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir, check=False)
    assert_clean_failure(result, "data/fine_tune/MNLI/train.tsv:7:", expected)
    assert exp_files(workdir) == []


def test_existing_experiment_is_never_mixed_with_a_new_run(workdir):
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)
    before = {p: p.stat().st_mtime_ns for p in (workdir / "exp").rglob("*.pt")}
    result = run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir, check=False)
    assert_clean_failure(result, "already has checkpoints (steps 4)", "--resume", "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in (workdir / "exp").rglob("*.pt")} == before
    # --overwrite starts afresh: the old checkpoints are replaced by the new run's.
    run_script("run_fine_tune.py", *with_flag(TEACHER, total_step=2, warmup_step=0),
               "--overwrite", cwd=workdir)
    assert sorted(p.name for p in (workdir / "exp").rglob("*.pt")) == ["model-2.pt", "train_state.pt"]


def test_evaluation_and_prediction_errors(workdir):
    result = run_script("run_fine_tune_eval.py", *flags(
        "--experiment nope --model bert --task mnli --dataset dev_matched --device_id -1"),
        cwd=workdir, check=False)
    assert_clean_failure(result, "experiment 'nope' not found: no exp/nope_bert_mnli/config.json "
                                 "under --exp_dir exp")
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)
    result = run_script("generate_test_prediction.py", *flags(
        "--experiment teacher_base --model bert --task mnli --dataset test_matched --ckpt 38000 "
        "--device_id -1"), cwd=workdir, check=False)
    assert_clean_failure(result, "model-38000.pt not found", "checkpoints at steps 4", "--ckpt")
    assert not (workdir / "exp" / "teacher_base_bert_mnli" / "predictions").exists()
    result = run_script("generate_test_prediction.py", *flags(
        "--experiment teacher_base --model bert --task mnli --dataset dev_matched --ckpt 4"),
        cwd=workdir, check=False)
    assert_clean_failure(result, "--dataset", "invalid choice: 'dev_matched'")


@pytest.mark.parametrize("content, expected", [
    ("", "data/fine_tune/MNLI/train.tsv is empty: download it again with `python -m fine_tune.download`"),
    ("header\tonly\n", "data/fine_tune/MNLI/train.tsv: header has columns ['header', 'only']"),
])
def test_empty_or_foreign_data_file(workdir, content, expected):
    (workdir / "data" / "fine_tune" / "MNLI" / "train.tsv").write_text(content)
    result = run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir, check=False)
    assert_clean_failure(result, expected)
    assert exp_files(workdir) == []


def test_teacher_and_student_vocabularies_must_match(workdir, assets):
    """The student starts from the teacher's --ptrain_ver; if that folder now holds a model
    with another vocabulary, distillation refuses before writing anything."""
    from fine_tune.demo_data import write_tiny_bert
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)
    (workdir / "tiny-bert").unlink()
    write_tiny_bert(workdir / "tiny-bert", ["completely different words here"] * 3, hidden_size=32,
                    num_layers=4, num_heads=2, intermediate_size=64, max_position_embeddings=128)
    result = run_script("run_lad_distil.py", *flags(
        "--teacher_exp teacher_base --tckpt 4 --experiment LAD --d_model 32 --d_ff 64 "
        "--num_attention_heads 2 --num_hidden_layers 2 --total_step 2 --warmup_step 0"),
        cwd=workdir, check=False)
    # (the teacher recorded the folder's absolute path)
    assert_clean_failure(result, "teacher and student vocabularies differ",
                         f"'{workdir / 'tiny-bert'}'")
    assert not (workdir / "exp" / "LAD_bert_mnli").exists()


def test_a_model_folder_without_its_tokenizer_is_refused(workdir):
    """Without vocab.txt/tokenizer.json, transformers builds a tokenizer of special tokens
    only, which would map every word to [UNK]."""
    import shutil
    bare = workdir / "bare-bert"
    bare.mkdir()
    for item in (workdir / "tiny-bert").iterdir():
        if item.name in ("config.json", "model.safetensors"):
            shutil.copy(item, bare / item.name)
    result = run_script("run_fine_tune.py", *with_flag(TEACHER, ptrain_ver="bare-bert"), cwd=workdir,
                        check=False)
    assert_clean_failure(result, "--ptrain_ver bare-bert: its tokenizer has", "tokenizer files")
    assert exp_files(workdir) == []


def test_damaged_files_give_one_line_or_are_rebuilt(workdir):
    run_script("run_fine_tune.py", *with_flag(TEACHER, ckpt_step=2), cwd=workdir)
    folder = workdir / "exp" / "teacher_base_bert_mnli"
    evaluate = flags("--experiment teacher_base --model bert --task mnli --dataset dev_matched "
                     "--device_id -1")
    # A damaged token cache costs a re-tokenisation, nothing more.
    run_script("run_fine_tune_eval.py", *evaluate, cwd=workdir)  # writes the cache
    caches = list((workdir / "data" / "fine_tune" / "MNLI" / "cache").glob("dev_matched-*.pt"))
    assert caches
    for cache in caches:
        cache.write_bytes(b"junk\n")
    result = run_script("run_fine_tune_eval.py", *evaluate, cwd=workdir)
    assert "token cache" in result.stdout and "tokenizing again" in result.stdout
    assert (folder / "results_dev_matched.csv").is_file()
    # A damaged checkpoint: one line, and the results file is not rewritten with a gap.
    before = (folder / "results_dev_matched.csv").read_text()
    data = (folder / "model-2.pt").read_bytes()
    (folder / "model-2.pt").write_bytes(data[:1000])
    result = run_script("run_fine_tune_eval.py", *evaluate, cwd=workdir, check=False)
    assert_clean_failure(result, "cannot read exp/teacher_base_bert_mnli/model-2.pt",
                         "restore it, or delete it and run again")
    assert (folder / "results_dev_matched.csv").read_text() == before
    # A damaged training state cannot be resumed from.
    (folder / "train_state.pt").write_bytes(b"junk\n")
    result = run_script("run_fine_tune.py", *with_flag(TEACHER, ckpt_step=2), "--resume",
                        cwd=workdir, check=False)
    assert_clean_failure(result, "train_state.pt: the file is damaged", "--overwrite")


def test_pkd_skip_needs_two_student_layers(workdir):
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)
    result = run_script("run_pkd_distill.py", *flags(
        "--teacher_exp teacher_base --tckpt 4 --experiment PKD --d_model 32 --d_ff 64 "
        "--num_attention_heads 2 --num_hidden_layers 1 --total_step 2 --warmup_step 0 "
        "--pkd_loss pkd-skip"), cwd=workdir, check=False)
    assert_clean_failure(result, "--num_hidden_layers 1 is outside what this method takes for the "
                                 "teacher's 4 layers (2 to 4); use --num_hidden_layers 2")
    assert not (workdir / "exp" / "PKD_bert_mnli").exists()


def test_missing_experiment_tokenizer_is_named_as_such(workdir):
    import shutil
    run_script("run_fine_tune.py", *flags(TEACHER), cwd=workdir)
    shutil.rmtree(workdir / "exp" / "teacher_base_bert_mnli" / "tokenizer")
    result = run_script("generate_test_prediction.py", *flags(
        "--experiment teacher_base --model bert --task mnli --dataset test_matched --ckpt 4 "
        "--device_id -1"), cwd=workdir, check=False)
    assert_clean_failure(result, "cannot load the tokenizer saved with teacher_base_bert_mnli")
    assert "--ptrain_ver" not in result.stderr
