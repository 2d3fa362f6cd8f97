"""Vanilla KD (and, with --soft_weight 0, the labels-only floor): the baseline of every table."""
from fine_tune.cli import kd_parser, main

if __name__ == "__main__":
    main(kd_parser(), "fine_tune.kd:distil_kd")
