"""Fine-tune a pre-trained BERT teacher on MNLI. See README.md for the seed command."""
from fine_tune.cli import main, teacher_parser

if __name__ == "__main__":
    main(teacher_parser(), "fine_tune.teacher:fine_tune_teacher")
