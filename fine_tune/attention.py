"""What TinyBERT and MiniLM read from inside a BERT's self-attention: the query, key and
value projections of chosen layers, and the padding mask of the forward pass.

They are caught by forward hooks on the projections' Linear modules as the model runs,
not recomputed: no extra matrix work, the student's gradients flow through the very
tensors its attention used, and the hooks fire however the model is called (DDP, bf16
weight copies, torch.compile). Reading them costs nothing but the references, which the
backward pass keeps anyway for the student; for the frozen teacher (no_grad) they hold the
chosen layers' projections until the loss is computed.
"""
import torch

PROJECTIONS = ("query", "key", "value")


class AttentionCapture:
    """The outputs [batch, length, width] of the chosen projections of the chosen layers
    (1-based) at the model's last forward pass, and that pass's key padding mask."""

    def __init__(self, model, layers, projections=PROJECTIONS):
        self.outputs, self.key_mask = {}, None
        bert = model.bert if hasattr(model, "bert") else model
        for layer in layers:
            attention = bert.encoder.layer[layer - 1].attention.self
            for name in projections:
                getattr(attention, name).register_forward_hook(self._keep(layer, name))
        model.register_forward_pre_hook(self._keep_mask, with_kwargs=True)

    def _keep(self, layer, name):
        def hook(module, inputs, output):
            self.outputs[layer, name] = output
        return hook

    def _keep_mask(self, module, args, kwargs):
        """The mask as the loop passes it (fine_tune.modeling.prepared_attention_mask): a
        boolean [batch, 1, length, length] view, a [batch, length] 0/1 mask, or none (a
        batch without padding)."""
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 4:
            mask = mask[:, 0, 0, :]
        self.key_mask = None if mask is None else mask.bool()

    def heads(self, layer: int, name: str, count: int) -> torch.Tensor:
        """The projection split into `count` heads, fp32: [batch, count, length, width / count]."""
        x = self.outputs[layer, name]
        batch, length, width = x.shape
        return x.float().view(batch, length, count, width // count).transpose(1, 2)

    def mask(self, like: torch.Tensor) -> torch.Tensor:
        """The key padding mask [batch, length] (True: a real token), all True when the
        batch had none."""
        if self.key_mask is None:
            return torch.ones(like.shape[0], like.shape[-2], dtype=torch.bool, device=like.device)
        return self.key_mask.to(like.device)
