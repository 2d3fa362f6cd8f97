"""Partial LAD: gates over only some teacher layers (a probing experiment of the paper)."""
from fine_tune.cli import probing_parser
from fine_tune.errors import run_cli
from fine_tune.lad import distil_partial_lad

if __name__ == "__main__":
    run_cli(distil_partial_lad, probing_parser().parse_args())
