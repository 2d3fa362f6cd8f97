"""The order of the training examples: which rows each step's batch holds. Its state,
(epoch, position), is all --resume needs to continue the same order."""
import torch

# --group_by_length sorts runs of this many batches by length (Hugging Face's
# LengthGroupedSampler uses 50 too): long enough runs that most batches hold rows of
# nearly one length, short enough that a batch's rows still come from all over the data.
GROUPED_BATCHES = 50


class BatchOrder:
    """Shuffled batches, epoch after epoch, the last batch of an epoch possibly smaller.
    Epoch e's permutation depends only on (seed, e), so (epoch, position) is the whole
    state of the data order. Given `lengths` (--group_by_length), each run of
    GROUPED_BATCHES batches of the permutation is sorted by length, longest first, so that
    a batch cut to its longest row (--dynamic_padding) carries little padding."""

    def __init__(self, num_examples: int, batch_size: int, seed: int,
                 lengths: torch.Tensor | None = None):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.lengths = lengths
        self.epoch, self.position = 0, 0
        self._permutation = None

    def next_batch(self) -> torch.Tensor:
        if self.position >= self.num_examples:
            self.epoch, self.position, self._permutation = self.epoch + 1, 0, None
        if self._permutation is None:
            self._permutation = self.permutation(self.epoch)
        rows = self._permutation[self.position:self.position + self.batch_size]
        self.position += len(rows)
        return rows

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        permutation = torch.randperm(self.num_examples, generator=generator)
        if self.lengths is None:
            return permutation
        runs = permutation.split(GROUPED_BATCHES * self.batch_size)
        return torch.cat([run[torch.argsort(self.lengths[run].long(), descending=True, stable=True)]
                          for run in runs])
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._permutation = state["epoch"], state["position"], None
