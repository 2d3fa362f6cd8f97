"""Fine-tune a pre-trained BERT teacher on MNLI. See README.md for the seed command."""
from fine_tune.cli import teacher_parser
from fine_tune.errors import run_cli
from fine_tune.teacher import fine_tune_teacher

if __name__ == "__main__":
    run_cli(fine_tune_teacher, teacher_parser().parse_args())
