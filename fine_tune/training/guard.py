"""The NaN guard: the first step at which a loss term or a group's gradient stopped being
finite, remembered on the device without synchronising, checked at log and checkpoint
steps, so a diverged model is never saved."""
import torch

from fine_tune import distributed
from fine_tune.errors import SharedError
from fine_tune.experiment import Experiment


class NonFiniteGuard:
    """Remembers, on the device and without synchronising, the first step at which each
    loss term, or each group's gradient, was not finite; `check` reads it (at log and
    checkpoint steps only). A NaN gradient with a finite loss matters as much: clipping
    spreads it into every weight. All values are checked together, as one vector: a
    handful of small ops per step, whatever the number of terms."""

    def __init__(self):
        self.keys, self.first_bad = [], None

    def update(self, terms: dict, groups: list, step: int) -> None:
        """The step's loss terms and each group's gradient norm (on the device; the
        messages are only worded in `check`). Loss terms first: they name a NaN first."""
        keys = [("loss", name) for name in terms] + [("gradient", group.name) for group in groups]
        if keys != self.keys:  # the first step (the terms never change within a run)
            self.keys = keys
            self.first_bad = torch.full((len(keys),), -1, device=groups[0].params[0].device)
        device = self.first_bad.device
        values = torch.stack([value.to(device) for value in terms.values()]
                             + [group.grad_norm.to(device) for group in groups])
        bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self, experiment: Experiment) -> None:
        """Raises if anything was not finite; under torchrun the ranks agree first (the
        earliest step over all of them), so all stop together with the same message."""
        if self.first_bad is None:
            return
        if distributed.active():
            never = torch.iinfo(self.first_bad.dtype).max
            steps = distributed.min_over_ranks(torch.where(self.first_bad < 0, never, self.first_bad))
            self.first_bad = torch.where(steps == never, -1, steps)
        bad = {key: step for key, step in zip(self.keys, self.first_bad.tolist()) if step >= 0}
        if bad:
            (kind, name), step = min(bad.items(), key=lambda item: item[1])  # the first
            what = (f"loss term '{name}' is not finite" if kind == "loss"
                    else f"the {name}'s gradient is not finite (the loss was)")
            steps = experiment.checkpoint_steps()
            last = f"model-{steps[-1]}.pt is the last good checkpoint" if steps else "no checkpoint was saved"
            raise SharedError(f"step {step}: {what}; the run stopped without "
                            f"saving ({last}); try a lower --lr or --mu in a new --experiment")
