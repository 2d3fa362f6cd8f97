"""TinyBERT's task-specific distillation: embeddings, hidden states, attention scores, predictions."""
from fine_tune.cli import main, tinybert_parser

if __name__ == "__main__":
    main(tinybert_parser(), "fine_tune.tinybert:distil_tinybert")
