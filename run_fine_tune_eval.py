"""Evaluate every checkpoint of an experiment (teacher or student) on a labelled split."""
from fine_tune.cli import main, eval_parser

if __name__ == "__main__":
    main(eval_parser(), "fine_tune.evaluation:evaluate_checkpoints")
