"""Partial LAD: gates over only some teacher layers (a probing experiment of the paper)."""
from fine_tune.cli import main, probing_parser

if __name__ == "__main__":
    main(probing_parser(), "fine_tune.lad:distil_partial_lad")
