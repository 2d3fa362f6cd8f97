"""--unpad: BERT's token-wise layers on the real tokens only (a speed option, off by default).

Even with --dynamic_padding a batch is padded to its longest row: random batches of 32
MRPC pairs are about 38% padding. Almost all of a BERT forward and backward is token-wise
work -- the query/key/value, attention-output and feed-forward Linears, the LayerNorms,
dropout, GELU -- which costs as much for a pad position as for a word, and whose result at
a pad position nothing reads. `unpad(model)` makes the model run those parts on one
[tokens, hidden] matrix of the batch's real tokens, and spreads queries, keys and values
back to [batch, heads, length, head size] only for the attention product itself (the one
part that needs the rows apart; its cost is length / (12 x hidden) of a layer's, ~2% for
MiniLM at length 100). The saving is the batch's padding fraction of nearly all the work.

Same weights, same function: the logits and every real token's hidden state equal the
padded model's within float rounding (tests/test_unpad.py: 1e-5, gradients too). What
differs: dropout draws its masks over the real tokens only, so a run is not bit-identical
to a padded run with the same seed (the same distribution, other draws), and hidden states
at pad positions come back as zeros. So the loop accepts --unpad only for objectives whose
loss reads no pad position (`Objective.padding_invariant`: teacher fine-tuning, ALP-KD's
[CLS] variant, PKD's pkd-skip), exactly those --dynamic_padding accepts.

On a GPU, counting the real tokens reads the mask on the host once per forward (one
synchronisation a step). Only the trained model runs unpadded (its evaluation during
training too: the same function in eval mode); the frozen teacher and
run_fine_tune_eval.py run padded. The model object keeps its class, parameters and state dict; only its `forward`
is replaced (an instance attribute), which DDP, torch.func.functional_call (the bf16
weight copies) and saving all go through unchanged.
"""
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput


def unpad(model):
    """Make `model` (a BertForSequenceClassification) run unpadded; returns it."""
    model.forward = lambda *args, **kwargs: unpadded_forward(model, *args, **kwargs)
    return model


def unpadded_forward(model, input_ids, attention_mask=None, token_type_ids=None,
                     output_hidden_states=False, return_dict=True, **ignored):
    """The model's logits (and hidden states if asked, zeros at pad positions), computed
    on the real tokens only. `attention_mask` is the [batch, length] padding mask or the
    boolean [batch, 1, length, length] one of modeling.prepared_attention_mask; None (a
    batch without padding) runs the model's own forward, there being nothing to remove."""
    if attention_mask is None:
        return type(model).forward(model, input_ids=input_ids, token_type_ids=token_type_ids,
                                   output_hidden_states=output_hidden_states)
    bert = model.bert
    keep = attention_mask[:, 0, 0, :] if attention_mask.dim() == 4 else attention_mask.bool()
    batch, length = keep.shape
    flat = keep.reshape(-1).nonzero().squeeze(1)  # real tokens' positions in batch x length
    lengths = keep.sum(1)
    first = lengths.cumsum(0) - lengths  # each row's [CLS] in the packed matrix (right padding)
    key_mask = keep[:, None, None, :]    # broadcast over heads and queries by SDPA

    embedded = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    width = embedded.shape[-1]
    x = embedded.reshape(batch * length, width).index_select(0, flat)  # [tokens, hidden]

    def spread(packed):
        """[tokens, n] -> [batch * length, n] with zeros at pad positions (differentiable)."""
        return packed.new_zeros(batch * length, packed.shape[-1]).index_copy(0, flat, packed)

    states = [embedded] if output_hidden_states else None
    for layer in bert.encoder.layer:
        attention = layer.attention.self
        heads, size = attention.num_attention_heads, attention.attention_head_size
        qkv = torch.cat([attention.query(x), attention.key(x), attention.value(x)], dim=-1)
        q, k, v = (spread(qkv).view(batch, length, 3, heads, size).permute(2, 0, 3, 1, 4))
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, scale=attention.scaling,
            dropout_p=attention.dropout.p if model.training else 0.0)
        context = context.transpose(1, 2).reshape(batch * length, heads * size).index_select(0, flat)
        after_attention = layer.attention.output(context, x)  # dense, dropout, LayerNorm(+x)
        x = layer.output(layer.intermediate(after_attention), after_attention)
        if output_hidden_states:
            states.append(spread(x).view(batch, length, width))

    pooled = bert.pooler.activation(bert.pooler.dense(x.index_select(0, first)))
    logits = model.classifier(model.dropout(pooled))
    return SequenceClassifierOutput(logits=logits,
                                    hidden_states=tuple(states) if output_hidden_states else None)
