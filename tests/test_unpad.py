"""--unpad: the unpadded forward equals the padded model (logits, real tokens' hidden
states, gradients) and is refused where a loss reads pad positions."""
import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from conftest import flags, run_script
from fine_tune.modeling import prepared_attention_mask
from fine_tune.unpad import unpad

LENGTHS = [9, 3, 6, 12, 1 + 1]  # [CLS] + [SEP] at the least


def model_and_batch(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=96, max_position_embeddings=32,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        num_labels=3, attn_implementation="sdpa")
    model = BertForSequenceClassification(config)
    width = max(LENGTHS)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in LENGTHS])
    ids = torch.randint(5, 300, (len(LENGTHS), width)) * mask
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    inputs = {"input_ids": ids, "token_type_ids": types * mask, "attention_mask": mask}
    return model, inputs, mask.bool()


@pytest.mark.parametrize("prepared", [False, True])
def test_unpadded_outputs_equal_the_padded_models(prepared):
    model, inputs, mask = model_and_batch()
    model.eval()
    fast = unpad(copy.deepcopy(model))
    given = prepared_attention_mask(inputs) if prepared else inputs
    with torch.no_grad():
        padded = model(**given, output_hidden_states=True)
        unpadded = fast(**given, output_hidden_states=True)
    torch.testing.assert_close(unpadded.logits, padded.logits, atol=1e-5, rtol=1e-5)
    assert len(unpadded.hidden_states) == len(padded.hidden_states) == 4
    for ours, theirs in zip(unpadded.hidden_states, padded.hidden_states):
        torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-5, rtol=1e-5)
    for ours in unpadded.hidden_states[1:]:
        assert (ours[~mask] == 0).all()  # pad positions are not computed


def test_unpadded_gradients_equal_the_padded_models():
    model, inputs, _ = model_and_batch()
    model.train()  # (dropout 0: the same function)
    fast = unpad(copy.deepcopy(model))
    labels = torch.tensor([0, 1, 2, 1, 0])
    for each in (model, fast):
        torch.nn.functional.cross_entropy(each(**inputs).logits, labels).backward()
    for (name, ours), theirs in zip(fast.named_parameters(), model.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-4, msg=name)
    # The state dict is the plain model's: checkpoints load anywhere.
    assert list(fast.state_dict()) == list(model.state_dict())
    assert type(fast) is BertForSequenceClassification


def test_dropout_stays_on_in_training_and_off_in_evaluation():
    model, inputs, _ = model_and_batch(dropout=0.3)
    unpad(model)
    model.train()
    torch.manual_seed(1)
    first = model(**inputs).logits
    torch.manual_seed(2)
    assert not torch.allclose(first, model(**inputs).logits)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**inputs).logits)


TEACHER = ("--experiment teacher --model bert --ptrain_ver tiny-bert --dataset train "
           "--batch_size 8 --ckpt_step 4 --log_step 2 --lr 1e-3 --max_seq_len 32 --device_id -1 "
           "--total_step 4 --warmup_step 1 --dynamic_padding")


def test_a_teacher_trains_unpadded_and_lad_refuses_it(workdir):
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--unpad", cwd=workdir)
    assert "done: checkpoint at step 4" in result.stdout
    config = (workdir / "exp" / "teacher_bert_mnli" / "config.json").read_text()
    assert '"unpad": true' in config
    student = ("--teacher_exp teacher --tckpt 4 --experiment LAD --d_model 32 --d_ff 64 "
               "--num_attention_heads 2 --num_hidden_layers 2 --batch_size 8 --total_step 2 "
               "--warmup_step 0 --ckpt_step 2 --log_step 2 --device_id -1 --unpad")
    result = run_script("run_lad_distil.py", *flags(student), cwd=workdir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: --unpad would change this method's loss (its "
                                     "hidden-state terms or gates read the pad positions, which "
                                     "--unpad does not compute); leave it off")
    result = run_script("run_fine_tune.py", *flags(TEACHER), "--unpad", "--compile",
                        "--experiment", "other", cwd=workdir, check=False)
    assert result.returncode == 2 and "--unpad and --compile: pick one" in result.stderr
    assert not (workdir / "exp" / "other_bert_mnli").exists()


def test_a_batch_without_padding_gets_no_mask_and_the_same_outputs():
    from fine_tune.modeling import has_padding
    model, inputs, mask = model_and_batch()
    model.eval()
    full = {key: value[:, :2] for key, value in inputs.items()}  # every row is 2+ tokens long
    assert not has_padding(full) and has_padding(inputs)
    given = prepared_attention_mask(full, has_padding(full))
    assert "attention_mask" not in given
    fast = unpad(copy.deepcopy(model))
    with torch.no_grad():
        masked = model(**prepared_attention_mask(full)).logits
        torch.testing.assert_close(model(**given).logits, masked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast(**given).logits, masked, atol=1e-5, rtol=1e-5)


def test_the_training_step_drops_the_mask_of_a_batch_without_padding(monkeypatch):
    from fine_tune.training import loop
    seen = []
    real = loop.prepared_attention_mask
    monkeypatch.setattr(loop, "prepared_attention_mask",
                        lambda inputs, padded=True: seen.append(padded) or real(inputs, padded))

    class Data:
        def batch(self, rows, trim, multiple):
            width = 4 if len(rows) == 2 else 6
            mask = torch.ones(len(rows), 6, dtype=torch.long)
            mask[0, 4:] = 0  # the first row is 4 tokens long
            return {"input_ids": torch.ones(len(rows), width, dtype=torch.long),
                    "attention_mask": mask[:, :width], "labels": torch.zeros(len(rows), dtype=torch.long)}

    from types import SimpleNamespace
    run = SimpleNamespace(data=Data(), dynamic_padding=True, device=torch.device("cpu"),
                          objective=SimpleNamespace(needs_hidden_states=False), devices={"cpu"},
                          amp=False, teacher=None, bf16_linears={},
                          forward_model=lambda **kwargs: kwargs)
    monkeypatch.setattr(loop, "_call", lambda run, role, module, args=(), kwargs=None:
                        module(**kwargs) if role == "model" else kwargs)
    loop.loss_terms(run, torch.tensor([0, 1]))
    loop.loss_terms(run, torch.tensor([0, 1, 2]))
    assert seen == [False, True]
