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

from fine_tune import distributed
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment, pretrained_source
from fine_tune.glue import get_task
from fine_tune.heads import head_of
from fine_tune.io import first_line
from fine_tune.modeling import (ATTENTION, build_classifier, device_id, load_architecture,
                                load_experiment_tokenizer, move, resolve_device,
                                set_matmul_precision)
from fine_tune.settings import derive
from fine_tune.teacher import save_tokenizer
from fine_tune.training import (Objective, TrainingRun, check_padding, check_training_args,
                                train, training_data)


class DistillationObjective(Objective):
    """hard_weight * CE + soft_weight * T^2 * KL(teacher/T || student/T) (for a regression
    task: MSE to the gold score and MSE to the teacher's score) + the method's hidden-state
    terms. Tensors are moved to the student's device for the loss."""
    needs_hidden_states = True
    needs_teacher = True  # False: the loop runs no teacher forward pass (labels only)

    def __init__(self, args, device: torch.device):
        super().__init__()
        self.hard_weight, self.soft_weight = args.hard_weight, args.soft_weight
        self.temperature, self.device = args.softmax_temp, device
        # Classification: CE and T^2 * KL; regression (STS-B): MSE to the gold score and
        # MSE to the teacher's score, without temperature.
        self.head = head_of(get_task(getattr(args, "task", "mnli")))

    def forward(self, student_out, teacher_out, labels):
        logits = student_out.logits
        terms = {"hard": self.hard_weight * self.head.hard(logits, labels)}
        if self.needs_teacher:
            teacher_logits = move(teacher_out.logits, self.device)
            terms["soft"] = self.soft_weight * self.head.soft(logits, teacher_logits,
                                                              self.temperature)
        terms.update(self.layer_terms(student_out, teacher_out))
        return terms

    def layer_terms(self, student_out, teacher_out) -> dict:
        """The method's terms beyond the logits; by default `hidden_terms` of the layers'
        outputs (the embedding output left out)."""
        return self.hidden_terms(student_out.hidden_states[1:], teacher_out.hidden_states[1:])

    def hidden_terms(self, student_hidden, teacher_hidden) -> dict:
        """{name: weighted loss} from S_1..S_n and H_1..H_L (tuples, 0-based)."""
        raise NotImplementedError


def mse_terms(students, targets, mu: float, device, num_layers: int | None = None,
              first: int = 1) -> dict:
    """(mu / n) * MSE(S_j, target_j) for each matched pair, over every element (padding
    included, as in the authors' code). `students[j]` and `targets[j]` are student layer
    j+first and its target; a target of None leaves that layer without a hidden term. n is
    the student's number of layers (`num_layers`, by default len(students))."""
    weight = mu / (num_layers or len(students))
    return {f"hidden_{j + first}": weight * F.mse_loss(s.float(), move(t, device).float())
            for j, (s, t) in enumerate(zip(students, targets)) if t is not None}


def layer_stride(teacher_layers: int, student_layers: int) -> int:
    if student_layers > teacher_layers:
        raise UserError(f"--num_hidden_layers {student_layers} is more than the teacher's "
                        f"{teacher_layers} layers; a student must not be deeper than its teacher")
    return teacher_layers // student_layers


def default_init_pairs(args, source_layers: int) -> list[tuple[int, int]]:
    """(student layer, pre-trained layer) pairs, 1-based: layer i*k ('even') or i
    ('first') of the pre-trained model of `source_layers` layers (the teacher's
    --ptrain_ver, or --student_ptrain_ver); none for 'random'."""
    n = args.num_hidden_layers
    if args.student_init == "random":
        return []
    if n > source_layers and getattr(args, "student_ptrain_ver", None):
        raise UserError(f"--student_ptrain_ver {args.student_ptrain_ver} has {source_layers} "
                        f"layers, fewer than --num_hidden_layers {n}: pick a deeper model, or "
                        "--student_init random")
    k = layer_stride(source_layers, n)
    if args.student_init == "first":
        return [(i, i) for i in range(1, n + 1)]
    return [(i, i * k) for i in range(1, n + 1)]


def student_misfits(args, teacher, depths, method_misfits=None, same_width=True) -> None:
    """Check every student flag against the teacher at once. A student is copied from the
    teacher's pre-trained layers and compared with its hidden states directly, so its width,
    feed-forward size and heads are the teacher's (unless `same_width` is False: a method
    that projects or relates states of any width), and its depth must be in `depths(L)` (a
    range; the method's). `method_misfits(args, L, n)` adds a method's own checks (partial
    LAD's indices) for a student of n layers, as [(flag, problem, value to use)]. Raises
    one error naming every flag to change and the value to use."""
    L = teacher.num_hidden_layers
    misfits = []
    for flag, given, name, what in () if not same_width else (
            ("--d_model", args.d_model, "hidden_size", "hidden size"),
            ("--d_ff", args.d_ff, "intermediate_size", "feed-forward size"),
            ("--num_attention_heads", args.num_attention_heads, "num_attention_heads", "attention heads")):
        if given != getattr(teacher, name):
            misfits.append((flag, f"{flag} {given} differs from the teacher's {what} "
                                  f"{getattr(teacher, name)}", getattr(teacher, name)))
    n, allowed = args.num_hidden_layers, depths(L)
    if n not in allowed and len(allowed):
        n = min(max(L // 2, allowed[0]), allowed[-1])  # half the teacher, as the seed's 12 -> 6
        misfits.append(("--num_hidden_layers", f"--num_hidden_layers {args.num_hidden_layers} is "
                        f"outside what this method takes for the teacher's {L} layers "
                        f"({allowed[0]} to {allowed[-1]})", n))
    if method_misfits is not None:
        misfits += method_misfits(args, L, n)
    if len(misfits) == 1:
        flag, problem, value = misfits[0]
        raise UserError(f"{problem}; use {flag} {value}")
    if misfits:
        fixes = " ".join(f"{flag} {value}" for flag, _, value in misfits)
        raise UserError(f"the student does not fit the teacher ({L} layers, hidden size "
                        f"{teacher.hidden_size}, d_ff {teacher.intermediate_size}, "
                        f"{teacher.num_attention_heads} heads): "
                        f"{'; '.join(problem for _, problem, _ in misfits if problem)}; use {fixes}")


def student_config(args, teacher_config: BertConfig) -> BertConfig:
    """The teacher's architecture with the student's flags. With random embeddings (the
    authors' setup) the position table has max_seq_len rows, as theirs; copied embeddings
    keep the pre-trained table."""
    config = BertConfig.from_dict(teacher_config.to_dict(), attn_implementation=ATTENTION)
    config.num_hidden_layers = args.num_hidden_layers
    config.hidden_size = args.d_model
    config.intermediate_size = args.d_ff
    config.num_attention_heads = args.num_attention_heads
    config.type_vocab_size = args.type_vocab_size
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = args.dropout
    if args.init_embeddings == "random":
        config.max_position_embeddings = args.max_seq_len
    return config


def initialise_student(student, pretrained: BertModel, pairs, copy_embeddings: bool) -> None:
    """Copy pre-trained layers and the pooler (and, with --init_embeddings copy, the
    embeddings) into the student. `pairs` are 1-based (student layer, pre-trained layer).
    Random embeddings are drawn as the authors' (transformers 3.3.1) BERT draws them:
    N(0, initializer_range) for every row, the padding token's included (transformers 5
    zeroes that row), and a LayerNorm of ones and zeros."""
    source, target = pretrained.config, student.config
    bert = student.bert
    shape = ("hidden_size", "intermediate_size", "num_attention_heads")
    if (pairs or copy_embeddings) and any(getattr(source, a) != getattr(target, a) for a in shape):
        sizes = lambda c: f"hidden {c.hidden_size}, d_ff {c.intermediate_size}, {c.num_attention_heads} heads"  # noqa: E731
        raise UserError(f"the student ({sizes(target)}) cannot start from the layers of the "
                        f"pre-trained model ({sizes(source)}): give --student_ptrain_ver a "
                        f"pre-trained model of the student's size, or --student_init random "
                        f"with --init_embeddings random")
    with torch.no_grad():
        for student_layer, pretrained_layer in pairs:
            bert.encoder.layer[student_layer - 1].load_state_dict(
                pretrained.encoder.layer[pretrained_layer - 1].state_dict())
        if pairs:
            bert.pooler.load_state_dict(pretrained.pooler.state_dict())
        if not copy_embeddings:
            pad = bert.embeddings.word_embeddings.padding_idx
            if pad is not None:
                bert.embeddings.word_embeddings.weight[pad].normal_(0.0, target.initializer_range)
            return
        if target.type_vocab_size != source.type_vocab_size:
            raise UserError(f"--type_vocab_size {target.type_vocab_size} differs from the "
                            f"pre-trained model's ({source.type_vocab_size}); use "
                            f"--type_vocab_size {source.type_vocab_size} or --init_embeddings random")
        bert.embeddings.load_state_dict(pretrained.embeddings.state_dict())


def load_teacher(args):
    """The fine-tuned teacher experiment, its frozen model and its config."""
    experiment = Experiment(args.exp_dir, args.teacher_exp, args.tmodel, args.task)
    experiment.require("--teacher_exp", "teacher experiment")
    steps = experiment.checkpoint_steps()
    if args.tckpt not in steps:
        if not steps:
            raise UserError(f"teacher {experiment.name} has no checkpoints yet (its training "
                            f"stopped before the first --ckpt_step): finish it with "
                            f"run_fine_tune.py --resume, or pick another --teacher_exp")
        raise UserError(f"teacher checkpoint {experiment.checkpoint_path(args.tckpt)} not found; "
                        f"{experiment.describe_checkpoints(steps)}: pick one with --tckpt")
    config = experiment.config()
    if config.get("task") != args.task:
        raise UserError(f"teacher {experiment.name} was trained on {config.get('task')}, not "
                        f"--task {args.task}")
    teacher = load_architecture(experiment)
    teacher.load_state_dict(experiment.load_checkpoint(args.tckpt))
    teacher.requires_grad_(False).eval()
    return experiment, teacher, config


def load_pretrained_encoder(ptrain_ver: str, flag: str = "the teacher's --ptrain_ver") -> BertModel:
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
                        f"student ({flag}): {first_line(error)}{hint}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def distil(args, make_objective, method: str, init_pairs=None, gate_config=None, depths=None,
           method_misfits=None, same_width=True) -> None:
    """Train a student with `make_objective(args, teacher_config, device, gate_device)`;
    `method` names it in config.json (and so in fine_tune.report).
    `init_pairs(args, source_layers)` overrides which pre-trained layers initialise the
    student; `gate_config(objective)` describes the objective's gates for gate_config.json;
    `depths(L)` the student depths the method takes (default 1..L) and `method_misfits`
    its own flag checks (see student_misfits); `same_width` False lets the student's width,
    feed-forward size and heads differ from the teacher's."""
    with distributed.same_on_every_rank():  # (flags only: rank 0 says what is wrong)
        check_training_args(args)
        if (args.teacher_exp, args.tmodel) == (args.experiment, args.model):
            raise UserError(f"--experiment {args.experiment} is the teacher's own experiment "
                            f"(--teacher_exp {args.teacher_exp}): the student would overwrite its "
                            "teacher; choose another --experiment")
        experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task)
        experiment.refuse_folder_name()
        device = distributed.select_device(args)  # under torchrun: the rank's, for all roles
    set_matmul_precision(args)
    distributed.start(device)
    teacher_device, gate_device = device, device
    if not distributed.active():
        teacher_device = resolve_device(args.tdevice_id, "--tdevice_id", default=device)
        gate_device = resolve_device(getattr(args, "gate_device_id", None), "--gate_device_id",
                                     default=device)
    # The student reads what its teacher read, and starts from the teacher's pre-trained
    # model; config.json records the devices used. (A new Settings: the flags stay as given.)
    args = derive(args, method=method, device_id=device_id(device),
                  tdevice_id=device_id(teacher_device), world_size=distributed.world_size(),
                  **({"gate_device_id": device_id(gate_device)} if hasattr(args, "gate_device_id")
                     else {}),
                  # (a local folder recorded as its absolute path, as the teacher's --ptrain_ver)
                  **({"student_ptrain_ver": pretrained_source(args.student_ptrain_ver)}
                     if getattr(args, "student_ptrain_ver", None) else {}))

    def build():
        teacher_experiment, teacher, teacher_args = load_teacher(args)
        student_misfits(args, teacher.config, depths or (lambda L: range(1, L + 1)), method_misfits,
                        same_width)
        tokenizer = load_experiment_tokenizer(teacher_experiment)
        inherited = {name: teacher_args[name] for name in ("max_seq_len", "ptrain_ver", "num_class")}
        settings = derive(args, **inherited)
        set_seed(settings.seed)
        config = student_config(settings, teacher.config)
        student = build_classifier(config.to_dict())
        own = getattr(settings, "student_ptrain_ver", None)  # (TinyBERT, MiniLM: any width)
        source = own or settings.ptrain_ver
        pretrained = load_pretrained_encoder(
            source, "--student_ptrain_ver" if own else "the teacher's --ptrain_ver")
        if pretrained.config.vocab_size != teacher.config.vocab_size:
            fix = ("give --student_ptrain_ver a model with the teacher's tokenizer" if own else
                   "the teacher's --ptrain_ver must still name the model it was trained from")
            raise UserError(f"teacher and student vocabularies differ: the teacher has "
                            f"{teacher.config.vocab_size} tokens but {source!r}, which "
                            f"initialises the student, has {pretrained.config.vocab_size}; {fix}")
        pairs = (init_pairs or default_init_pairs)(settings, pretrained.config.num_hidden_layers)
        initialise_student(student, pretrained, pairs,
                           copy_embeddings=settings.init_embeddings == "copy")
        objective = make_objective(settings, teacher.config, device, gate_device)
        objective.bind(student, teacher)
        check_padding(settings, objective)
        return settings, teacher, tokenizer, student, objective
    args, teacher, tokenizer, student, objective = distributed.agreed(build)
    args, data, eval_data = training_data(args, tokenizer)
    restart = objective.restart_step
    if restart and restart >= args.total_step:
        raise UserError(f"{objective.restart_flag} {restart} leaves no steps for the second "
                        f"stage: the run has {args.total_step} steps in all; give fewer, or more "
                        "--total_step (or --epoch)")

    with experiment.training(vars(args), overwrite=args.overwrite, resume=args.resume):
        def write():
            experiment.write_json("model_config.json", student.config.to_dict())
            if gate_config is not None:
                experiment.write_json("gate_config.json", gate_config(objective))
            save_tokenizer(tokenizer, experiment)
        distributed.agreed(write, main_only=True)
        # (labels only: the teacher gave its tokenizer, data settings and initialisation,
        # but runs no forward pass)
        uses_teacher = objective.needs_teacher
        train(TrainingRun(args, experiment, student.to(device), device, objective, data,
                          teacher=teacher.to(teacher_device) if uses_teacher else None,
                          teacher_device=teacher_device if uses_teacher else None,
                          eval_data=eval_data))
