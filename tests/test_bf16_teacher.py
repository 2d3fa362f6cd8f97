"""The frozen teacher under --amp bf16 (fine_tune.modeling.bf16_teacher, applied by
TrainingRun): bf16 Linear weights cast once, fp32 embeddings, LayerNorms and residual
stream, so its hidden states (LAD's, PKD's and ALP-KD's targets) carry autocast's error,
not the several-times-larger error of a teacher cast to bf16 whole."""
import argparse
import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import BertConfig, BertForSequenceClassification

from fine_tune.modeling import prepared_attention_mask
from fine_tune.training import FineTuning, TrainingRun

CPU = torch.device("cpu")
LAYERS = 12


@pytest.fixture(scope="module")
def models():
    """A random 12-layer, 64-wide BERT (sdpa), a padded batch, and the teacher as
    TrainingRun prepares it under --amp bf16."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=LAYERS,
                        num_attention_heads=2, intermediate_size=256, max_position_embeddings=64,
                        num_labels=3, attn_implementation="sdpa")
    teacher = BertForSequenceClassification(config).requires_grad_(False).eval()
    ids = torch.randint(0, 500, (8, 32))
    mask = (torch.arange(32) < torch.randint(8, 33, (8, 1))).long()  # rows of different lengths
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    student = BertForSequenceClassification(BertConfig.from_dict(
        config.to_dict() | {"num_hidden_layers": 1}, attn_implementation="sdpa"))
    run = TrainingRun(argparse.Namespace(amp="bf16"), None, student, CPU, FineTuning(), None,
                      copy.deepcopy(teacher), CPU)
    return teacher, run.teacher, inputs


def forward(model, inputs, autocast=False):
    """As loss_terms runs the teacher: no_grad, outside autocast (or inside, for the reference)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return model(**inputs, output_hidden_states=True)


def relative_error(value, reference):
    return float((value.float() - reference).norm() / reference.norm())


def test_bf16_teacher_is_as_exact_as_autocast_and_better_than_a_whole_cast(models):
    teacher, bf16, inputs = models
    inputs = prepared_attention_mask(inputs)  # what the training step passes
    outputs = {"fp32": forward(teacher, inputs), "autocast": forward(teacher, inputs, True),
               "whole cast": forward(copy.deepcopy(teacher).to(torch.bfloat16), inputs),
               "bf16_teacher": forward(bf16, inputs)}
    reference = outputs.pop("fp32")
    errors = {name: (relative_error(out.hidden_states[LAYERS], reference.hidden_states[LAYERS]),
                     relative_error(out.logits, reference.logits))
              for name, out in outputs.items()}
    new, autocast, whole = errors["bf16_teacher"], errors["autocast"], errors["whole cast"]
    assert new[0] <= 1.01 * autocast[0] and new[1] <= 1.01 * autocast[1], errors
    assert new[0] < whole[0] / 4, errors  # the whole cast: ~27x autocast's error at layer 12 here
    # In fact the same numbers as autocast, bitwise on the CPU, at every layer.
    mine, theirs = outputs["bf16_teacher"], outputs["autocast"]
    for layer in range(LAYERS + 1):
        assert torch.equal(mine.hidden_states[layer], theirs.hidden_states[layer]), layer
    assert torch.equal(mine.logits, theirs.logits)
    # Autocast's output dtypes: fp32 hidden states (LayerNorm outputs), bf16 logits.
    assert all(h.dtype == torch.float32 for h in mine.hidden_states)
    assert mine.logits.dtype == torch.bfloat16


def test_a_2d_attention_mask_gives_autocasts_numbers_too(models):
    """transformers turns a 2D mask into its own; SDPA then still gets bf16 q/k/v."""
    teacher, bf16, inputs = models
    mine, theirs = forward(bf16, inputs), forward(teacher, inputs, autocast=True)
    assert all(torch.equal(a, b) for a, b in zip(mine.hidden_states, theirs.hidden_states))
    assert torch.equal(mine.logits, theirs.logits)


def test_only_linears_are_bf16_and_no_weight_is_cast_per_forward(models):
    _, model, inputs = models
    linear = {id(p) for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters()}
    for name, parameter in model.named_parameters():
        expected = torch.bfloat16 if id(parameter) in linear else torch.float32
        assert parameter.dtype == expected, name  # embeddings and LayerNorms stay fp32

    class Casts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.sources = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default:
                self.sources.append(args[0].data_ptr())
            return func(*args, **(kwargs or {}))

    weights = {p.data_ptr() for p in model.parameters()}
    inputs = prepared_attention_mask(inputs)
    with Casts() as casts:
        forward(model, inputs)
    assert casts.sources and not weights & set(casts.sources)
    # Only activations are cast: each layer's attention input (once for query, key and
    # value) and feed-forward input, and the pooler's input.
    assert len(casts.sources) == 2 * LAYERS + 1
