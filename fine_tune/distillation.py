"""What every distillation method shares: the frozen teacher, the student and its
initialisation, and the logit loss. A method only supplies its hidden-state loss
(`DistillationObjective.hidden_terms`) and any trainable modules that loss owns.

Notation (as in the paper): teacher hidden states H_1 .. H_L and student S_1 .. S_n,
the embedding output excluded; k = L // n.
"""
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import BertConfig, BertModel, set_seed
from transformers.utils import logging as hf_logging

from fine_tune.data import load_tokenized
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment
from fine_tune.io import first_line
from fine_tune.modeling import (ATTENTION, build_classifier, load_experiment_tokenizer, move,
                                resolve_device)
from fine_tune.teacher import save_tokenizer
from fine_tune.trainer import Objective, TrainingRun, check_padding, check_training_args, train


class DistillationObjective(Objective):
    """hard_weight * CE + soft_weight * T^2 * KL(teacher/T || student/T) + the method's
    hidden-state terms. Tensors are moved to the student's device for the loss."""
    needs_hidden_states = True

    def __init__(self, args, device: torch.device):
        super().__init__()
        self.hard_weight, self.soft_weight = args.hard_weight, args.soft_weight
        self.temperature, self.device = args.softmax_temp, device

    def forward(self, student_out, teacher_out, labels):
        logits = student_out.logits.float()
        teacher_logits = move(teacher_out.logits, self.device).float()
        t = self.temperature
        terms = {
            "hard": self.hard_weight * F.cross_entropy(logits, labels),
            "soft": self.soft_weight * t * t * F.kl_div(
                F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                reduction="batchmean", log_target=True),
        }
        terms.update(self.hidden_terms(student_out.hidden_states[1:], teacher_out.hidden_states[1:]))
        return terms

    def hidden_terms(self, student_hidden, teacher_hidden) -> dict:
        """{name: weighted loss} from S_1..S_n and H_1..H_L (tuples, 0-based)."""
        raise NotImplementedError


def mse_terms(students, targets, mu: float, device) -> dict:
    """(mu / n) * MSE(S_j, target_j) for each matched pair, over every element (padding
    included, as in the authors' code). `students[j]` and `targets[j]` are student layer
    j+1 and its target."""
    weight = mu / len(students)
    return {f"hidden_{j + 1}": weight * F.mse_loss(s.float(), move(t, device).float())
            for j, (s, t) in enumerate(zip(students, targets))}


def layer_stride(teacher_layers: int, student_layers: int) -> int:
    if student_layers > teacher_layers:
        raise UserError(f"--num_hidden_layers {student_layers} is more than the teacher's "
                        f"{teacher_layers} layers; a student must not be deeper than its teacher")
    return teacher_layers // student_layers


def default_init_pairs(args, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, pre-trained layer) pairs, 1-based: layer i*k ('even') or i ('first')."""
    k = layer_stride(teacher_layers, args.num_hidden_layers)
    if args.student_init == "first":
        return [(i, i) for i in range(1, args.num_hidden_layers + 1)]
    return [(i, i * k) for i in range(1, args.num_hidden_layers + 1)]


def student_config(args, teacher_config: BertConfig) -> BertConfig:
    config = BertConfig.from_dict(teacher_config.to_dict(), attn_implementation=ATTENTION)
    config.num_hidden_layers = args.num_hidden_layers
    config.hidden_size = args.d_model
    config.intermediate_size = args.d_ff
    config.num_attention_heads = args.num_attention_heads
    config.type_vocab_size = args.type_vocab_size
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = args.dropout
    if args.d_model % args.num_attention_heads:
        raise UserError(f"--d_model {args.d_model} is not divisible by --num_attention_heads "
                        f"{args.num_attention_heads}")
    return config


def initialise_student(student, pretrained: BertModel, pairs, copy_embeddings: bool) -> None:
    """Copy pre-trained layers (and the pooler, and by default the embeddings) into the
    student. `pairs` are 1-based (student layer, pre-trained layer)."""
    source = pretrained.config
    target = student.config
    for name in ("hidden_size", "intermediate_size", "num_attention_heads"):
        if getattr(source, name) != getattr(target, name):
            flag = {"hidden_size": "--d_model", "intermediate_size": "--d_ff",
                    "num_attention_heads": "--num_attention_heads"}[name]
            raise UserError(f"{flag} {getattr(target, name)} differs from the pre-trained model's "
                            f"{name} ({getattr(source, name)}), whose layers initialise the "
                            f"student; use {flag} {getattr(source, name)}")
    bert = student.bert
    with torch.no_grad():
        for student_layer, pretrained_layer in pairs:
            bert.encoder.layer[student_layer - 1].load_state_dict(
                pretrained.encoder.layer[pretrained_layer - 1].state_dict())
        bert.pooler.load_state_dict(pretrained.pooler.state_dict())
        if copy_embeddings:
            if target.type_vocab_size != source.type_vocab_size:
                raise UserError(f"--type_vocab_size {target.type_vocab_size} differs from the "
                                f"pre-trained model's ({source.type_vocab_size}); use "
                                f"--type_vocab_size {source.type_vocab_size} or --init_embeddings random")
            bert.embeddings.load_state_dict(pretrained.embeddings.state_dict())


def load_teacher(args):
    """The fine-tuned teacher experiment, its frozen model and its config."""
    experiment = Experiment(args.exp_dir, args.teacher_exp, args.tmodel, args.task)
    if not (experiment.path / "config.json").is_file():
        raise UserError(f"teacher experiment {experiment.path} not found: check --teacher_exp, "
                        f"--tmodel and --task (train it with run_fine_tune.py first)")
    steps = experiment.checkpoint_steps()
    if args.tckpt not in steps:
        raise UserError(f"teacher checkpoint {experiment.checkpoint_path(args.tckpt)} not found; "
                        f"{experiment.name} has checkpoints at steps "
                        f"{', '.join(map(str, steps)) or '(none)'}: pick one with --tckpt")
    config = experiment.config()
    if config.get("task") != args.task:
        raise UserError(f"teacher {experiment.name} was trained on {config.get('task')}, not "
                        f"--task {args.task}")
    teacher = build_classifier(experiment.model_config())
    teacher.load_state_dict(experiment.load_checkpoint(args.tckpt))
    teacher.requires_grad_(False).eval()
    return experiment, teacher, config


def load_pretrained_encoder(ptrain_ver: str) -> BertModel:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return BertModel.from_pretrained(ptrain_ver, add_pooling_layer=True)
    except (OSError, ValueError) as error:
        hint = ""
        if not Path(ptrain_ver).is_absolute() and ("/" in ptrain_ver or ptrain_ver.startswith(".")):
            hint = ("; a relative path is read from the current folder: run from the folder the "
                    "teacher was trained in")
        raise UserError(f"cannot load the pre-trained model {ptrain_ver!r} that initialises the "
                        f"student (the teacher's --ptrain_ver): {first_line(error)}{hint}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def distil(args, make_objective, init_pairs=None, gate_config=None) -> None:
    """Train a student with `make_objective(args, teacher_layers, device) -> objective`.
    `init_pairs(args, teacher_layers)` overrides which pre-trained layers initialise the
    student; `gate_config(objective)` describes the objective's gates for gate_config.json."""
    check_training_args(args)
    experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task)
    device = resolve_device(args.device_id)
    for flag in ("tdevice_id", "gate_device_id"):  # unset: the student's device
        if hasattr(args, flag) and getattr(args, flag) is None:
            setattr(args, flag, args.device_id)
    teacher_device = resolve_device(args.tdevice_id, "--tdevice_id")
    teacher_experiment, teacher, teacher_args = load_teacher(args)
    tokenizer = load_experiment_tokenizer(teacher_experiment)
    # The student reads what its teacher read, and starts from the teacher's pre-trained model.
    args.max_seq_len = teacher_args["max_seq_len"]
    args.ptrain_ver = teacher_args["ptrain_ver"]
    args.num_class = teacher_args["num_class"]
    teacher_layers = teacher.config.num_hidden_layers
    if args.d_model != teacher.config.hidden_size:
        raise UserError(f"--d_model {args.d_model} differs from the teacher's hidden size "
                        f"{teacher.config.hidden_size}: the student is initialised from its "
                        f"pre-trained layers and its hidden states are compared with the "
                        f"teacher's directly; use --d_model {teacher.config.hidden_size}")

    set_seed(args.seed)
    config = student_config(args, teacher.config)
    student = build_classifier(config.to_dict())
    pairs = (init_pairs or default_init_pairs)(args, teacher_layers)
    pretrained = load_pretrained_encoder(args.ptrain_ver)
    if pretrained.config.vocab_size != teacher.config.vocab_size:
        raise UserError(f"teacher and student vocabularies differ: the teacher has "
                        f"{teacher.config.vocab_size} tokens but {args.ptrain_ver!r}, which "
                        f"initialises the student, has {pretrained.config.vocab_size}; the "
                        f"teacher's --ptrain_ver must still name the model it was trained from")
    initialise_student(student, pretrained, pairs, copy_embeddings=args.init_embeddings == "copy")
    objective = make_objective(args, teacher_layers, device)
    check_padding(args, objective)
    data = load_tokenized(args.data_dir, args.task, args.dataset, tokenizer, args.max_seq_len)

    experiment.create(vars(args), overwrite=args.overwrite, resume=args.resume)
    experiment.write_json("model_config.json", student.config.to_dict())
    if gate_config is not None:
        experiment.write_json("gate_config.json", gate_config(objective))
    save_tokenizer(tokenizer, experiment)
    train(TrainingRun(args, experiment, student.to(device), device, objective, data,
                      teacher=teacher.to(teacher_device), teacher_device=teacher_device))
