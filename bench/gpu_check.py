"""The prepared GPU check: everything we cannot measure on a CPU, in one call.

    bench/gpu_check.sh OUT            # on a machine with a CUDA GPU (at most --budget, 540 s)
    bench/gpu_check.sh OUT --cpu      # a dry run with tiny sizes on the CPU (the test suite runs it)

Steps, each logged, each allowed to fail without stopping the others, most wanted first
(each gets at most what is left of --budget, 540 s by default):
  1. the machine: GPU, driver, torch and transformers versions (environment.json);
  2. the benchmark at the seed's sizes for teacher and LAD in fp32 and bf16: examples/s,
     MFU against the measured bf16 (fp32) matmul rate, peak memory, ops per step, and
     which attention (SDPA) kernel runs;
  3. a 300-step LAD run at the seed's sizes on synthetic data through the real scripts,
     killed with SIGKILL once its training state reached the step-200 checkpoint and
     resumed, beside the same run uninterrupted (on a GPU the two are close, not bitwise:
     cuBLAS kernels are not deterministic);
  4. tests/test_cuda.py (every method in fp32 and bf16, gates on a second GPU when there
     is one, a killed GPU run resumed, --compile; not in the CPU dry run, where all skip);
  5. the benchmark's teacher and LAD in bf16 with --compile;
then a summary table (summary.csv, summary.json after every step, printed). Everything
goes to OUT.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(text: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {text}", flush=True)


DEADLINE = [float("inf")]  # time.time() by which everything must be done (--budget)


def remaining(timeout: int) -> int:
    return int(max(0, min(timeout, DEADLINE[0] - time.time())))


def run(command: list, out: Path, name: str, timeout: int, env=None) -> dict:
    """Run a step, its output to OUT/<name>.log; returns its status and seconds. A step
    gets at most what is left of --budget (none left: skipped)."""
    timeout = remaining(timeout)
    if timeout < 5:
        log(f"{name}: skipped, the --budget is spent")
        return {"step": name, "status": "skipped (budget)", "seconds": 0}
    log(f"{name}: {' '.join(map(str, command))}")
    started = time.perf_counter()
    with open(out / f"{name}.log", "w") as file:
        try:
            result = subprocess.run(list(map(str, command)), cwd=ROOT, stdout=file,
                                    stderr=subprocess.STDOUT, timeout=timeout,
                                    env=dict(os.environ, **(env or {})))
            status = "ok" if result.returncode == 0 else f"failed ({result.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout} s"
    seconds = time.perf_counter() - started
    log(f"{name}: {status} in {seconds:.0f} s (log: {out / (name + '.log')})")
    return {"step": name, "status": status, "seconds": round(seconds, 1)}


def environment(out: Path, cpu: bool) -> dict:
    import torch
    import transformers
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "cpu_dry_run": cpu}
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                             "--format=csv,noheader"], capture_output=True,
                                            text=True).stdout.strip()
    (out / "environment.json").write_text(json.dumps(info, indent=2))
    log(f"environment: {info}")
    return info


def benchmark(out: Path, cpu: bool, python: str, configs: list) -> tuple[list, list]:
    """The benchmark's rows for each (amp, compile) of `configs`."""
    device = ["--device_id", "-1"] if cpu else ["--device_id", "0"]
    size = ["--size", "tiny", "--steps", "1", "--warmup", "1"] if cpu else \
        ["--size", "seed", "--steps", "20", "--warmup", "3"]
    steps, rows = [], []
    for amp, compile_ in configs:
        name = f"bench_{amp}" + ("_compile" if compile_ else "")
        folder = out / name
        methods = ["--methods", "" if compile_ else "teacher,lad",
                   "--compile_methods", "teacher,lad" if compile_ else ""]
        command = [python, "bench/bench_train.py", *size, *device, "--amp", amp, "--measure_peak",
                   *methods, "--out", folder]
        # (the CPU dry run checks that the step works, not its speed: bf16 without bf16
        # matrix instructions is several times slower than fp32 there, so it gets longer)
        limit = (180 if compile_ else 90) * (4 if cpu else 1)
        steps.append(run(command, out, name, timeout=limit))
        for result in folder.glob("*.json"):
            for row in json.loads(result.read_text())["results"]:
                rows.append({"config": name} | row)
    return steps, rows


def kill_and_resume(out: Path, cpu: bool, python: str) -> tuple[list, dict]:
    """A LAD run at the seed's sizes (tiny with --cpu) killed after a checkpoint and
    resumed, beside the same run uninterrupted."""
    from fine_tune.demo_data import demo_texts, write_demo_mnli, write_tiny_bert
    work = out / "kill_resume"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    write_demo_mnli(data, sizes={"train": 1000 if cpu else 12000, "dev_matched": 200})
    shape = dict(hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64) if cpu else \
        dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
    write_tiny_bert(work / "bert", demo_texts(data), max_position_embeddings=512, **shape)
    total, ckpt = (30, 10) if cpu else (300, 100)
    device = "-1" if cpu else "0"
    common = ["--data_dir", data, "--exp_dir", work / "exp", "--device_id", device]
    teacher = [python, "run_fine_tune.py", "--experiment", "teacher", "--ptrain_ver", work / "bert",
               "--total_step", "10", "--warmup_step", "1", "--ckpt_step", "10", "--lr", "1e-4",
               *common]
    student = ["--num_hidden_layers", str(shape["num_layers"] // 2), "--d_model", str(shape["hidden_size"]),
               "--d_ff", str(shape["intermediate_size"]), "--num_attention_heads", str(shape["num_heads"])]
    lad = [python, "run_lad_distil.py", "--teacher_exp", "teacher", "--tckpt", "10", *student,
           "--total_step", str(total), "--warmup_step", str(total // 10), "--ckpt_step", str(ckpt),
           "--log_step", str(ckpt // 2), "--amp", "fp32" if cpu else "bf16", *common]
    steps = [run(teacher, out, "kill_resume_teacher", timeout=120)]
    steps.append(run([*lad, "--experiment", "whole"], out, "kill_resume_uninterrupted", timeout=200))
    # The killed run: SIGKILL once its training state has moved on to the checkpoint at
    # step total - ckpt (so the resume starts there).
    log("kill_resume_killed: starting, to be killed after its checkpoint at step "
        f"{total - ckpt}")
    folder = work / "exp" / "killed_bert_mnli"
    target, state = folder / f"model-{total - ckpt}.pt", folder / "train_state.pt"

    def state_moved_on() -> bool:
        try:
            return target.exists() and state.stat().st_mtime_ns >= target.stat().st_mtime_ns
        except FileNotFoundError:
            return False
    with open(out / "kill_resume_killed.log", "w") as file:
        process = subprocess.Popen(list(map(str, [*lad, "--experiment", "killed"])), cwd=ROOT,
                                   stdout=file, stderr=subprocess.STDOUT)
        deadline = time.time() + remaining(200)
        while not state_moved_on() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
        process.wait()
    steps.append({"step": "kill_resume_killed", "status": "killed" if killed else "not killed",
                  "seconds": None})
    steps.append(run([*lad, "--experiment", "killed", "--resume"], out, "kill_resume_resumed",
                     timeout=200))
    result = {"killed_after_checkpoint": killed}
    try:
        import torch
        a = torch.load(work / "exp" / "whole_bert_mnli" / f"model-{total}.pt", weights_only=True)
        b = torch.load(work / "exp" / "killed_bert_mnli" / f"model-{total}.pt", weights_only=True)
        result["max_weight_difference"] = max(float((a[k] - b[k]).abs().max()) for k in a)
        result["bitwise_equal"] = all(torch.equal(a[k], b[k]) for k in a)
        import pandas as pd
        logs = [pd.read_csv(work / "exp" / f"{e}_bert_mnli" / "train_log.csv") for e in ("whole", "killed")]
        result["final_loss_uninterrupted"] = float(logs[0]["loss/total"].iloc[-1])
        result["final_loss_resumed"] = float(logs[1]["loss/total"].iloc[-1])
        result["logged_steps_resumed"] = logs[1]["step"].tolist()
    except Exception as error:  # reported, not raised: the other steps' results still count
        result["error"] = f"{type(error).__name__}: {error}"
    (out / "kill_resume.json").write_text(json.dumps(result, indent=2))
    log(f"kill_resume: {result}")
    return steps, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for every result and log (created)")
    parser.add_argument("--cpu", action="store_true", help="a dry run on the CPU with tiny sizes")
    parser.add_argument("--budget", type=float, default=540,
                        help="seconds the whole check may take (steps are cut short or skipped "
                             "to fit; the summary is written after every step)")
    parser.add_argument("--no_compile", action="store_true",
                        help="leave out the --compile benchmark (the test suite's dry run: "
                             "compiling on a CPU takes a minute)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    python = sys.executable
    started = time.perf_counter()
    DEADLINE[0] = time.time() + args.budget
    info = environment(out, args.cpu)
    if not args.cpu and not info["gpus"]:
        log("no CUDA GPU visible: run with --cpu for a dry run")
        return 2
    summary = {"environment": info, "steps": [], "benchmark": [], "kill_resume": {}}

    def save() -> None:  # after every step: a run cut off still leaves what it measured
        summary["seconds"] = round(time.perf_counter() - started, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    # Most wanted first, in case the budget runs out: eager speed, the resume, the tests,
    # then compilation.
    bench_steps, rows = benchmark(out, args.cpu, python, [("fp32", False), ("bf16", False)])
    summary["steps"] += bench_steps
    summary["benchmark"] += rows
    save()
    resume_steps, resume = kill_and_resume(out, args.cpu, python)
    summary["steps"] += resume_steps
    summary["kill_resume"] = resume
    save()
    if not args.cpu:  # (on the CPU every CUDA test skips; the suite runs the file itself)
        summary["steps"].append(run([python, "-m", "pytest", "-q", "-x", "tests/test_cuda.py"],
                                    out, "test_cuda", timeout=200))
        save()
    if not args.no_compile:
        bench_steps, rows = benchmark(out, args.cpu, python, [("bf16", True)])
        summary["steps"] += bench_steps
        summary["benchmark"] += rows
        save()
    steps = summary["steps"]
    rows = summary["benchmark"]
    import pandas as pd
    table = pd.DataFrame(rows)
    keep = [c for c in ("config", "what", "examples_per_s", "ms_per_step", "ops_per_step", "mfu",
                        "peak_memory_mb", "tflops_per_s", "seconds_with_compilation", "kernel")
            if c in table.columns]
    if len(table):
        table[keep].to_csv(out / "summary.csv", index=False)
        print(table[keep].to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4g}"))
    print(pd.DataFrame(steps).to_string(index=False))
    print(f"kill and resume: {resume}")
    print(f"gpu_check done in {summary['seconds']:.0f} s; everything is in {out}")
    return 0 if all(s["status"] in ("ok", "killed") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
