"""Models, tokenizers and devices.

Every model is a transformers BertForSequenceClassification using PyTorch's
scaled-dot-product attention; it returns logits and, when asked, the hidden states
of every layer, which is all the distillation objectives need.
"""
from contextlib import ExitStack
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from fine_tune.errors import UserError
from fine_tune.io import first_line

hf_logging.disable_progress_bar()  # per-tensor loading bars; our own bars say what matters

ATTENTION = "sdpa"


def resolve_device(device_id: int | None, flag: str = "--device_id",
                   default: torch.device | None = None) -> torch.device:
    """The device a flag names. Left out (None): `default` if given (the teacher and the
    gates follow the student), else GPU 0 when there is one, said in one line, else the
    CPU."""
    if device_id is None:
        if default is not None:
            return default
        if torch.cuda.is_available():
            print(f"{flag} not given: running on GPU 0 ({torch.cuda.get_device_name(0)}); "
                  f"pass {flag} -1 to use the CPU")
            return torch.device("cuda", 0)
        return torch.device("cpu")
    if device_id == -1:
        return torch.device("cpu")
    if device_id < -1:
        raise UserError(f"{flag} {device_id}: use a CUDA device index or -1 for the CPU")
    if not torch.cuda.is_available():
        raise UserError(f"{flag} {device_id}: this machine has no CUDA device; use {flag} -1 "
                        "to run on the CPU")
    count = torch.cuda.device_count()
    if device_id >= count:
        names = ", ".join(f"{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
        raise UserError(f"{flag} {device_id}: this machine's CUDA devices are {names}; "
                        f"use one of them or -1 for the CPU")
    return torch.device("cuda", device_id)


def set_matmul_precision(args) -> None:
    """--tf32: TF32 for fp32 matrix products and convolutions on CUDA (off: full fp32)."""
    if getattr(args, "tf32", False):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def compiled(module, args):
    """`module` under torch.compile with --compile (the same parameters: checkpoints and
    state dicts are the plain module's), else `module` itself."""
    return torch.compile(module) if getattr(args, "compile", False) else module


def device_id(device: torch.device) -> int:
    """The --device_id value that names `device` (-1: the CPU)."""
    return -1 if device.type == "cpu" else device.index


def _label_maps(task):
    """The model's own label names: the task's classes, or 'score' for a regression."""
    names = task.labels if task.labels is not None else ("score",)
    return {"id2label": dict(enumerate(names)), "label2id": {l: i for i, l in enumerate(names)}}


def load_tokenizer(source, problem=None):
    """`problem(error)` words the error; by default it is about --ptrain_ver."""
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise UserError(problem(error) if problem else _not_found(source, "tokenizer", error)) from None


def load_experiment_tokenizer(experiment):
    """The tokenizer saved in an experiment folder when it was trained."""
    folder = experiment.path / "tokenizer"
    return load_tokenizer(folder, lambda error: (
        f"cannot load the tokenizer saved with {experiment.name} from {folder} "
        f"({type(error).__name__}): the folder is missing or damaged; save the tokenizer of "
        "the pre-trained model it started from there (tokenizer.save_pretrained), or copy the "
        "folder from its teacher's experiment"))


def load_pretrained_classifier(ptrain_ver: str, task, dropout: float):
    """A pre-trained BERT with a new head for `task` (a fine_tune.glue.Task): one output
    per class, or one score."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice is expected
    try:
        return BertForSequenceClassification.from_pretrained(
            ptrain_ver, num_labels=task.num_labels, hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout, attn_implementation=ATTENTION, **_label_maps(task))
    except (OSError, ValueError) as error:
        raise UserError(_not_found(ptrain_ver, "model", error)) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def build_classifier(model_config: dict) -> BertForSequenceClassification:
    """A model with the architecture saved in an experiment (weights come from a checkpoint)."""
    return BertForSequenceClassification(
        BertConfig.from_dict(model_config, attn_implementation=ATTENTION))


def load_architecture(experiment) -> BertForSequenceClassification:
    """The model of an experiment folder, built from its model_config.json (no weights)."""
    config = experiment.model_config()
    try:
        return build_classifier(config)
    except Exception as error:  # transformers validates fields with many exception types
        raise UserError(f"{experiment.path / 'model_config.json'} is damaged ({first_line(error)}): "
                        "restore it from a copy, or train the experiment again with "
                        "--overwrite") from None


MIN_SEQ_LEN = 8  # [CLS] premise [SEP] hypothesis [SEP] with a few tokens of each


def check_max_seq_len(max_seq_len: int, model_config) -> None:
    if max_seq_len < MIN_SEQ_LEN:
        raise UserError(f"--max_seq_len {max_seq_len} leaves no room for a sentence pair "
                        f"([CLS] premise [SEP] hypothesis [SEP]); use at least {MIN_SEQ_LEN} "
                        "(the seed uses 128)")
    limit = model_config.max_position_embeddings
    if max_seq_len > limit:
        raise UserError(f"--max_seq_len {max_seq_len} exceeds the model's position limit "
                        f"({limit}); use --max_seq_len {limit} or less")


def check_tokenizer(tokenizer, model_config, source) -> None:
    """A folder saved without its tokenizer files yields a tokenizer of special tokens
    only, which maps every word to [UNK]: refuse it rather than train on nothing."""
    size, vocab = len(tokenizer), model_config.vocab_size
    if size > vocab or size < vocab // 2:
        raise UserError(f"--ptrain_ver {source}: its tokenizer has {size} tokens but the model's "
                        f"vocabulary has {vocab}; the folder probably lacks the model's tokenizer "
                        "files (vocab.txt or tokenizer.json): save them there with "
                        "tokenizer.save_pretrained")


def _not_found(source, what: str, error: Exception) -> str:
    if Path(str(source)).exists():
        return (f"--ptrain_ver {source}: cannot load a {what} from this folder ({error}); "
                "it must be a Hugging Face model folder (config.json, weights, tokenizer files)")
    return (f"--ptrain_ver {source} is neither a local folder nor downloadable from the "
            f"Hugging Face hub ({type(error).__name__}); check the name and the network, or "
            "pass a local Hugging Face model folder, which works offline")


def autocast(devices, enabled: bool) -> ExitStack:
    """bf16 autocast on every device type in use (a no-op when not enabled)."""
    stack = ExitStack()
    if enabled:
        for kind in sorted({torch.device(d).type for d in devices}):
            stack.enter_context(torch.autocast(kind, dtype=torch.bfloat16))
    return stack


def bf16_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """Make a frozen model run its matrix products in bf16 without autocast, with
    autocast's numerics (--amp bf16's teacher; in place, once; returns `model`).

    Only the nn.Linear weights and biases become bf16, so no weight is cast per step.
    Embeddings, LayerNorms and the residual stream stay fp32: each bf16 Linear casts its
    input to bf16 (a forward pre-hook; already-bf16 inputs pass unchanged), its output is
    bf16, and BERT's residual add (bf16 sublayer output + fp32 input) promotes to fp32
    before the fp32 LayerNorm, as under autocast. Cast whole instead, the residual stream
    and LayerNorms would be bf16 too: the hidden states that LAD, PKD and ALP-KD distil
    from would carry about 7 times autocast's error (bench/README.md). The outputs are
    therefore what autocast gives: fp32 hidden states (the LayerNorms'), bf16 logits
    (the classifier Linear's). Each self-attention casts its input once for query, key
    and value together (a pre-hook on the module holding the three Linears); the
    attention itself (SDPA) then gets bf16 q/k/v and the boolean mask of
    prepared_attention_mask, which any dtype takes."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_bf16_input)
        elif all(isinstance(getattr(module, name, None), torch.nn.Linear)
                 for name in ("query", "key", "value")):
            module.register_forward_pre_hook(_bf16_input)
    return model


def _bf16_input(module, args):
    """Forward pre-hook: the first positional input in bf16 (no copy if it already is)."""
    return (args[0].to(torch.bfloat16), *args[1:])


def move(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device`, asynchronously only towards a GPU: an asynchronous copy to the CPU
    could be read before it has landed."""
    return tensor.to(device, non_blocking=torch.device(device).type == "cuda")


def has_padding(batch: dict) -> bool:
    """Whether any row of a batch still on the host is padded (read there, before the copy
    to a GPU, so no device waits for it; through numpy, so that no torch op that could
    synchronise a device is called: tests/test_trainer.py profiles for them)."""
    return not batch["attention_mask"].numpy().all()


def prepared_attention_mask(inputs: dict, padded: bool = True) -> dict:
    """Replace the [batch, length] padding mask by the 4D boolean mask that scaled-dot-
    product attention takes ([batch, 1, length, length], an expanded view, no copy).
    transformers passes a prepared 4D mask through unchanged; given a 2D mask it checks
    whether the mask is all ones, which synchronises the GPU with the host on every forward.
    `padded` False (a batch without padding, found on the host by has_padding): no mask at
    all, which lets SDPA run its unmasked kernels; an all-true mask is the same function
    but slower (on the CPU, length-grouped MiniLM steps 2-8% slower, bench/README.md)."""
    if not padded:
        return {key: value for key, value in inputs.items() if key != "attention_mask"}
    mask = inputs["attention_mask"].bool()
    length = mask.shape[-1]
    return {**inputs, "attention_mask": mask[:, None, None, :].expand(-1, 1, length, -1)}
