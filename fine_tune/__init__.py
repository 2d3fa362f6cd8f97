"""Fine-tune BERT teachers on GLUE MNLI and distil them into smaller students."""
