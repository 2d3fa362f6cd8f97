"""The order of the training examples: which rows each step's batch holds. Its state,
(epoch, position), is all --resume needs to continue the same order."""
import torch


class BatchOrder:
    """Shuffled batches, epoch after epoch, the last batch of an epoch possibly smaller.
    Epoch e's permutation depends only on (seed, e), so (epoch, position) is the whole
    state of the data order."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.epoch, self.position = 0, 0
        self._permutation = None

    def next_batch(self) -> torch.Tensor:
        if self.position >= self.num_examples:
            self.epoch, self.position, self._permutation = self.epoch + 1, 0, None
        if self._permutation is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._permutation = torch.randperm(self.num_examples, generator=generator)
        rows = self._permutation[self.position:self.position + self.batch_size]
        self.position += len(rows)
        return rows

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._permutation = state["epoch"], state["position"], None
