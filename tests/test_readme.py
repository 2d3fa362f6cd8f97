"""The documentation holds together: every command in the shell blocks of README.md and
docs/*.md parses with its script's flags, as written; every relative link (and its
#anchor) in README.md, docs/*.md and bench/README.md resolves; every flag of every
command is described on that command's page; the pages stay short and start as they
should. (The scripts' behaviour is tested elsewhere; this catches documentation that
drifted from the code.)"""
import re
import sys
from unittest import mock

import pytest

from conftest import ROOT
from fine_tune import cli
from fine_tune.download import build_parser as download_parser
from fine_tune.compare import build_parser as compare_parser
from fine_tune.export import build_parser as export_parser
from fine_tune.report import build_parser as report_parser
from fine_tune.submit import build_parser as submit_parser
from fine_tune.sweep import build_parser as sweep_parser


def demo_parser():
    """fine_tune.demo builds its parser inside main(): catch it there, running nothing."""
    from fine_tune import demo
    made = []

    def keep(*args, **kwargs):
        made.append(cli.new_parser(*args, **kwargs))
        return made[-1]

    with mock.patch.object(demo, "new_parser", keep), \
            mock.patch.object(demo, "run_cli", lambda *args: None), \
            mock.patch.object(sys, "argv", ["python -m fine_tune.demo"]):
        demo.main()
    return made[0]


PARSERS = {
    "run_fine_tune.py": cli.teacher_parser, "run_lad_distil.py": cli.lad_parser,
    "run_lad_no_distil.py": cli.lad_no_parser, "run_probing_lad.py": cli.probing_parser,
    "run_alp_distil.py": cli.alp_parser, "run_pkd_distill.py": cli.pkd_parser,
    "run_kd_distil.py": cli.kd_parser, "run_tinybert_distil.py": cli.tinybert_parser,
    "run_minilm_distil.py": cli.minilm_parser,
    "run_fine_tune_eval.py": cli.eval_parser, "generate_test_prediction.py": cli.predict_parser,
    "-m fine_tune.download": download_parser, "-m fine_tune.submit": submit_parser,
    "-m fine_tune.export": export_parser, "-m fine_tune.report": report_parser,
    "-m fine_tune.compare": compare_parser, "-m fine_tune.sweep": sweep_parser,
    "-m fine_tune.demo": demo_parser,
}
# The page that documents each command's flags.
PAGE_OF = {
    "run_fine_tune.py": "docs/teacher.md",
    "run_lad_distil.py": "docs/distillation.md", "run_lad_no_distil.py": "docs/distillation.md",
    "run_probing_lad.py": "docs/distillation.md", "run_alp_distil.py": "docs/distillation.md",
    "run_pkd_distill.py": "docs/distillation.md", "run_kd_distil.py": "docs/distillation.md",
    "run_tinybert_distil.py": "docs/distillation.md", "run_minilm_distil.py": "docs/distillation.md",
    "run_fine_tune_eval.py": "docs/evaluation.md",
    "generate_test_prediction.py": "docs/submission.md",
    "-m fine_tune.download": "docs/data.md", "-m fine_tune.submit": "docs/submission.md",
    "-m fine_tune.export": "docs/export.md", "-m fine_tune.report": "docs/comparing.md",
    "-m fine_tune.compare": "docs/comparing.md", "-m fine_tune.sweep": "docs/sweeps.md",
    "-m fine_tune.demo": "docs/demo.md",
}
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]                           # whose shell commands are parsed
LINKED = [*PAGES, ROOT / "bench" / "README.md"]   # whose links must resolve
README_LINES, DOC_LINES = 400, 350


def name(path):
    return str(path.relative_to(ROOT))


def sh_lines(path):
    """The lines of a page's ```sh blocks, continuations joined, comments dropped."""
    return [line.split("  #")[0].strip()
            for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S)
            for line in block.replace("\\\n", " ").splitlines()]


def commands(paths):
    found = []
    for path in paths:
        for line in sh_lines(path):
            for script in PARSERS:
                if line.startswith(f"python {script}"):
                    found.append((script, line[len(f"python {script}"):].split(), name(path)))
                elif line.startswith("torchrun ") and f" {script} " in f"{line} ":
                    found.append((script, line.split(f" {script}", 1)[1].split(), name(path)))
    return found


COMMANDS = commands(PAGES)


def test_the_pages_have_the_commands_they_should():
    scripts = {script for script, _, _ in COMMANDS}
    assert set(PARSERS) <= scripts, f"never shown in a shell block: {set(PARSERS) - scripts}"
    assert len(COMMANDS) >= 20
    # The seed's pipeline (teacher, LAD, evaluation, prediction) is in the README itself.
    in_readme = {script for script, _, _ in commands([README])}
    assert {"run_fine_tune.py", "run_lad_distil.py", "run_fine_tune_eval.py",
            "generate_test_prediction.py"} <= in_readme


def test_every_command_line_names_a_command_there_is():
    """A `python run_...`, `python generate_...` or `python -m fine_tune.…` line that is
    none of the commands (a misspelt script) would otherwise be skipped silently."""
    for path in PAGES:
        for line in sh_lines(path):
            if re.match(r"python (run_|generate_|-m fine_tune\.)", line):
                assert any(line.startswith(f"python {script}") and
                           line[len(f"python {script}"):][:1] in ("", " ") for script in PARSERS), \
                    f"{name(path)}: {line}"


def test_every_torchrun_command_names_a_script():
    lines = [line for path in PAGES for line in sh_lines(path) if line.startswith("torchrun ")]
    assert len(lines) >= 3
    for line in lines:
        assert any(f" {script} " in f"{line} " for script in PARSERS if script.endswith(".py")), line


@pytest.mark.parametrize("script, argv, page", COMMANDS,
                         ids=[f"{page}: {' '.join([s, *a])}"[:80] for s, a, page in COMMANDS])
def test_documented_command_parses(script, argv, page):
    PARSERS[script]().parse_args(argv)


def test_every_sweep_command_names_a_shipped_plan_that_loads():
    from fine_tune.sweep import plan
    sweeps = [argv for script, argv, _ in COMMANDS if script == "-m fine_tune.sweep"]
    assert len(sweeps) >= 3
    for argv in sweeps:
        loaded = plan.load(ROOT / sweep_parser().parse_args(argv).plan)
        assert loaded.runs


# Links and anchors.

def prose(text):
    """The text outside fenced code blocks and inline code (where [x](y) is not a link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's anchor of a heading: its text lowercased, punctuation other than - and _
    dropped, spaces as hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path):
    """(level, text) of the page's headings, outside fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return [(len(m[1]), m[2]) for m in re.finditer(r"^(#{1,6}) +(.+?) *#* *$", text, re.M)]


def anchors(path):
    seen, found = {}, set()
    for _, text in headings(path):
        base = slug(text)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def links(path):
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?: +\"[^\"]*\")?\)", prose(path.read_text()))


def test_the_slug_is_githubs():
    assert slug("Sweeps: `python -m fine_tune.sweep PLAN.toml`") == \
        "sweeps-python--m-fine_tunesweep-plantoml"
    assert slug("The bf16 teacher's error") == "the-bf16-teachers-error"
    assert slug("Is the difference real? `python -m fine_tune.compare`") == \
        "is-the-difference-real-python--m-fine_tunecompare"


@pytest.mark.parametrize("path", LINKED, ids=name)
def test_every_relative_link_and_anchor_resolves(path):
    assert links(path), f"{name(path)} links nowhere"
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {name(linked)})")
    assert not broken, f"{name(path)}: " + "; ".join(broken)


# Every flag on its page.

@pytest.mark.parametrize("script", PARSERS)
def test_every_flag_is_on_its_page(script):
    page = ROOT / PAGE_OF[script]
    text = page.read_text()
    flags = {option for action in PARSERS[script]()._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"}
    assert flags
    missing = sorted(flag for flag in flags
                     if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text))
    assert not missing, f"{PAGE_OF[script]} does not describe {script}'s {', '.join(missing)}"


@pytest.mark.parametrize("script", PARSERS)
def test_the_readme_map_links_each_command_to_its_page(script):
    rows = [line for line in README.read_text().splitlines()
            if line.startswith(f"| `python {script}` |")]
    assert rows, f"README.md's map of commands has no row for python {script}"
    assert any(f"]({PAGE_OF[script]}" in row for row in rows), rows


# Shape of the pages.

def test_the_readme_is_short_and_starts_with_the_quick_start():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_LINES, len(lines)
    first_screen = "\n".join(lines[:60])
    for target in ("make demo", "make test", "make test-quick"):
        assert re.search(rf"^{target}(?![\w-])", first_screen, re.M), target


@pytest.mark.parametrize("path", DOCS, ids=name)
def test_each_page_is_short_and_starts_with_a_title_and_the_way_back(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= DOC_LINES, len(lines)
    assert lines[0].startswith("# ") and lines[1] == "", "a one-line title first"
    opening = "\n".join(lines[2:lines.index("", 2)])  # the first paragraph
    assert "](../README.md)" in opening, "the first paragraph links back to the README"


@pytest.mark.parametrize("path", PAGES + [ROOT / "bench" / "README.md"], ids=name)
def test_the_outline_has_one_title_and_no_skipped_levels(path):
    levels = [level for level, _ in headings(path)]
    assert levels[0] == 1 and levels.count(1) == 1, levels
    for before, after in zip(levels, levels[1:]):
        assert after <= before + 1, f"{name(path)}: a level-{after} heading under a level-{before}"


def test_every_page_is_one_click_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert {page.resolve() for page in DOCS} <= linked, \
        [name(page) for page in DOCS if page.resolve() not in linked]


@pytest.mark.parametrize("path", LINKED, ids=name)
def test_no_page_narrates_how_the_software_was_built(path):
    text = path.read_text()
    told = re.findall(r"\b(?:sessions?|this issue|issues? \d+|was added|before the fix)\b", text, re.I)
    assert not told, f"{name(path)}: {told}"
