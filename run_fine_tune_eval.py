"""Evaluate every checkpoint of an experiment (teacher or student) on a labelled split."""
from fine_tune.cli import eval_parser
from fine_tune.errors import run_cli
from fine_tune.evaluation import evaluate_checkpoints

if __name__ == "__main__":
    run_cli(evaluate_checkpoints, eval_parser().parse_args())
