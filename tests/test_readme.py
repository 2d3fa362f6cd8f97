"""Every command in README.md's shell blocks parses with its script's flags, as written
(the scripts' behaviour is tested elsewhere; this catches a flag that drifted)."""
import re

import pytest

from conftest import ROOT
from fine_tune import cli
from fine_tune.download import build_parser as download_parser
from fine_tune.compare import build_parser as compare_parser
from fine_tune.export import build_parser as export_parser
from fine_tune.report import build_parser as report_parser
from fine_tune.submit import build_parser as submit_parser
from fine_tune.sweep import build_parser as sweep_parser

PARSERS = {
    "run_fine_tune.py": cli.teacher_parser, "run_lad_distil.py": cli.lad_parser,
    "run_lad_no_distil.py": cli.lad_no_parser, "run_probing_lad.py": cli.probing_parser,
    "run_alp_distil.py": cli.alp_parser, "run_pkd_distill.py": cli.pkd_parser,
    "run_fine_tune_eval.py": cli.eval_parser, "generate_test_prediction.py": cli.predict_parser,
    "-m fine_tune.download": download_parser, "-m fine_tune.submit": submit_parser,
    "-m fine_tune.export": export_parser, "-m fine_tune.report": report_parser,
    "-m fine_tune.compare": compare_parser, "-m fine_tune.sweep": sweep_parser,
}


def readme_commands():
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            for name in PARSERS:
                if line.startswith(f"python {name}"):
                    commands.append((name, line[len(f"python {name}"):].split()))
                elif line.startswith("torchrun ") and f" {name} " in f"{line} ":
                    commands.append((name, line.split(f" {name}", 1)[1].split()))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_it_should():
    scripts = {name for name, _ in COMMANDS}
    assert {"run_fine_tune.py", "run_lad_distil.py", "run_fine_tune_eval.py",
            "generate_test_prediction.py", "-m fine_tune.download", "-m fine_tune.submit",
            "-m fine_tune.sweep"} <= scripts
    assert len(COMMANDS) >= 20


def test_every_torchrun_command_names_a_script():
    text = (ROOT / "README.md").read_text()
    lines = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S)
             for line in block.replace("\\\n", " ").splitlines() if line.startswith("torchrun ")]
    assert len(lines) >= 3
    for line in lines:
        assert any(f" {name} " in f"{line} " for name in PARSERS if name.endswith(".py")), line


@pytest.mark.parametrize("name, argv", COMMANDS, ids=[" ".join([n, *a])[:60] for n, a in COMMANDS])
def test_readme_command_parses(name, argv):
    PARSERS[name]().parse_args(argv)


def test_every_sweep_command_names_a_shipped_plan_that_loads():
    from fine_tune import plan
    sweeps = [argv for name, argv in COMMANDS if name == "-m fine_tune.sweep"]
    assert len(sweeps) >= 3
    for argv in sweeps:
        loaded = plan.load(ROOT / sweep_parser().parse_args(argv).plan)
        assert loaded.runs
