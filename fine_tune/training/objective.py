"""What a method is to the loop: an `Objective` turns the model's outputs (and a frozen
teacher's) into named loss terms, and may own trainable modules (LAD's gates), which the
loop trains as a second optimiser group. `FineTuning` is the teacher's objective; the
distillation methods' live in fine_tune/lad.py, alp.py and pkd.py."""
from torch import nn

from fine_tune.heads import Classification


class Objective(nn.Module):
    """A method's loss. `forward` returns named, already weighted loss terms whose sum
    is minimised; parameters registered on the objective are trained as a separate
    group ("gate")."""
    needs_hidden_states = False
    padding_invariant = False  # True when padding beyond the longest row leaves the loss unchanged
    unpad_safe = True  # False: reads the attention's projections, which --unpad computes unpadded
    # The flags that train the objective's own parameters: "gate_" (--gate_lr, ...: LAD's
    # gates) or "" (the model's --lr, ...: TinyBERT's projection, trained with the student).
    optimizer_prefix = "gate_"

    def bind(self, model, teacher) -> None:
        """Called once with the student and the frozen teacher before training, for a
        method that reads more of them than their outputs (TinyBERT's attention scores,
        MiniLM's relations: forward hooks). Neither becomes a submodule: the objective's
        parameters stay its own."""

    # A step after which the optimisers and their schedules start again (TinyBERT's
    # second stage); 0: never.
    restart_step = 0
    restart_flag = ""  # the flag that set it, for the error when it is not below --total_step

    def start_step(self, step: int, epoch: int) -> None:
        """Called before each step (from 1) with the epoch (from 0) its batch comes from:
        BERT-PKD's --layer_map random draws its teacher layers per epoch, TinyBERT's stages
        switch at a step."""

    def forward(self, student_out, teacher_out, labels) -> dict:
        raise NotImplementedError

    def clip_units(self) -> list[list]:
        """Parameter lists whose gradient norms are clipped separately."""
        return [list(self.parameters())]

    def statistics(self) -> dict:
        """Values to watch that are not losses, from the last forward: {tag: detached
        tensor on the device, a scalar or a vector}, logged with the loss terms (LAD: one
        vector of every gate's mean z, one of the mean of (z - 1/2)^2). Each must be a
        mean over the forward's rows: the trainer averages it over the micro-batches by
        rows and over the ranks, which gives the step's value over its whole batch, and
        keeps one value per step until --log_step."""
        return {}

    def interval_statistics(self, steps: dict) -> dict:
        """{tag: tensor} to log from `steps` ({tag: tensor of the interval's steps by the
        statistic's shape}, each row a step's value over its whole batch): by default the
        mean over the steps; LAD first turns each step's two means into the step's
        standard deviation of z."""
        return {tag: values.mean(0) for tag, values in steps.items()}

    def name_statistics(self, values: dict) -> dict:
        """{logged name: number} from `statistics()`'s tags and averaged values (floats,
        or lists of them for vectors)."""
        return values


class FineTuning(Objective):
    """Plain fine-tuning: the task head's supervised loss (cross-entropy against the gold
    class, logged as 'ce'; MSE against the gold score for a regression task, 'mse')."""
    padding_invariant = True

    def __init__(self, head=Classification):
        super().__init__()
        self.head = head

    def forward(self, student_out, teacher_out, labels):
        return {self.head.term: self.head.hard(student_out.logits, labels)}
