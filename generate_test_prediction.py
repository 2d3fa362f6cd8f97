"""Write the GLUE submission file (MNLI-m.tsv / MNLI-mm.tsv) of one checkpoint."""
from fine_tune.cli import main, predict_parser

if __name__ == "__main__":
    main(predict_parser(), "fine_tune.evaluation:write_test_predictions")
