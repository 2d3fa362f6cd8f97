"""What a task's outputs are: class scores or one regression score (STS-B).

The one place that knows the difference: the supervised ("hard") loss, the
distillation ("soft") loss against a teacher's outputs, and how outputs become
predictions. Everything else asks the task's head.
"""
import numpy as np
import torch
from torch.nn import functional as F


class Classification:
    term = "ce"  # the fine-tuning loss term's name in logs

    @staticmethod
    def hard(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against the gold class ids."""
        return F.cross_entropy(logits.float(), labels)

    @staticmethod
    def soft(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean."""
        t = temperature
        return t * t * F.kl_div(F.log_softmax(logits.float() / t, dim=-1),
                                F.log_softmax(teacher_logits.float() / t, dim=-1),
                                reduction="batchmean", log_target=True)

    @staticmethod
    def predict(logits: np.ndarray) -> np.ndarray:
        """The model's class ids."""
        return logits.argmax(axis=-1)


class Regression:
    term = "mse"

    @staticmethod
    def hard(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE against the gold score."""
        return F.mse_loss(logits.float().squeeze(-1), labels.float())

    @staticmethod
    def soft(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """MSE against the teacher's score (a score has no temperature)."""
        return F.mse_loss(logits.float(), teacher_logits.float())

    @staticmethod
    def predict(logits: np.ndarray) -> np.ndarray:
        """The predicted score."""
        return logits[:, 0]


def head_of(task):
    """The head of a fine_tune.glue.Task."""
    return Regression if task.regression else Classification
