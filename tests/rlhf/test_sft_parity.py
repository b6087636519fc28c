"""Parity of rlhf.sft with TRL 1.16's SFTTrainer (conversational rows,
`assistant_only_loss=True`): the same tiny model and conversations give the
same per-token losses, the same batch loss (the mean over the batch's
assistant tokens) and, after one AdamW step at the same learning rate, the
same weights. Our trainer runs its default packed rows; TRL pads.

TRL finds the assistant tokens through `{% generation %}` markers in the
chat template. The tiny model's template has none, so TRL gets the same
template with the markers around each assistant turn's content + EOS: the
rendered text is unchanged, and the marked span is what rlhf.sft trains on.
"""

import pytest
import torch
from test_sft import conversations

from rlhf.sft import IGNORE, SFTConfig, batch_nll, tokenize_conversations, train_sft
from rlhf.tiny import EOS

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

# CPU settings TRL needs: its bf16 default fails without a GPU.
TRL_CPU = dict(bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True, save_strategy="no")
MARKED_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '" + EOS + "' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '" + EOS + "' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _rows():
    rows = conversations(3, 2, seed=5)
    rows[0]["messages"][1]["content"] += " a longer answer, so the conversations differ in length."
    rows[3]["messages"] += [{"role": "user", "content": "and the sea?"},
                            {"role": "assistant", "content": "no, the sea is grey."}]  # two answers in one
    return rows


def _trl_trainer(model_path, rows, tmp_path, lr, **kwargs):
    from transformers import AutoModelForCausalLM

    from rlhf._torch import load_tokenizer

    tok = load_tokenizer(model_path, "right")
    assert tok.apply_chat_template(rows[3]["messages"], tokenize=False) == tok.apply_chat_template(
        rows[3]["messages"], tokenize=False, chat_template=MARKED_TEMPLATE)
    tok.chat_template = MARKED_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    ds = datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])
    args = trl.SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, per_device_train_batch_size=len(rows),
                         learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         max_grad_norm=1.0, optim="adamw_torch", max_length=512, **TRL_CPU, **kwargs)
    return trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)


def test_per_token_and_batch_loss_match_trl_sft_trainer(tiny_model_path, tmp_path):
    from rlhf._torch import load_tokenizer

    rows = _rows()
    trainer = _trl_trainer(tiny_model_path, rows, tmp_path, lr=1e-3)
    model = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        theirs = trainer.compute_loss(model, dict(batch))
        # TRL's per-token losses: the NLL of each labelled token under its own labels.
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        their_tokens = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                                         ignore_index=IGNORE, reduction="none")
        their_tokens = their_tokens[batch["labels"][:, 1:].flatten() != IGNORE]

    tok = load_tokenizer(tiny_model_path, "right")
    seqs, _ = tokenize_conversations(tok, rows, 512)
    # The same tokens are trained on, row by row (TRL's sequence also holds the template's trailing newline).
    ours_labelled = [[t for t in lab if t != IGNORE] for _, lab in seqs]
    assert ours_labelled == [[t for t in lab if t != IGNORE] for lab in batch["labels"].tolist()]
    with torch.no_grad():
        nll, _, _ = batch_nll(model, seqs, SFTConfig(packing=False), tok.pad_token_id, torch.device("cpu"))
        packed_nll, _, _ = batch_nll(model, seqs, SFTConfig(packing=True), tok.pad_token_id, torch.device("cpu"))
    # Per token, in row order (the padded path keeps it): 1e-5 nats, the same float32 maths.
    assert torch.allclose(nll, their_tokens, atol=1e-5)
    # The batch loss: the sum over assistant tokens over their count, on both sides; packed rows too.
    assert nll.mean().item() == pytest.approx(theirs.item(), abs=1e-5)
    assert packed_nll.mean().item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(nll.mean().item() - torch.stack([c.mean() for c in nll.split(
        [len(x) for x in ours_labelled])]).mean().item()) > 1e-3  # a mean of per-row means would differ: teeth


@pytest.mark.parametrize("steps", [1, 2])
def test_adamw_steps_give_trl_sft_trainers_weights(tiny_model_path, tmp_path, steps):
    """One step, and two: Adam's first update is about lr * sign(gradient), blind to the
    gradient's scale; the second depends on the ratio of the two steps' gradients."""
    from safetensors.torch import load_file

    rows, lr = _rows(), 1e-3
    trainer = _trl_trainer(tiny_model_path, rows, tmp_path / "trl", lr=lr, max_steps=steps)
    trainer.train()
    theirs = {k: v.detach() for k, v in trainer.model.state_dict().items()}

    # A step over all rows each epoch: every row is trained on (eval_rows given), one packed batch (our default).
    config = SFTConfig(lr=lr, batch_size=len(rows), epochs=steps)
    assert config.packing and config.weight_decay == 0.0 and config.max_grad_norm == 1.0
    final = train_sft(config, rows, tiny_model_path, tmp_path / "ours", eval_rows=rows[:1])
    assert final["sft/steps"] == trainer.state.global_step == steps
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    start = load_file(f"{tiny_model_path}/model.safetensors")
    assert set(ours) == set(start) <= set(theirs)
    moved = max((theirs[k] - start[k]).abs().max().item() for k in start)
    assert moved > 0.5 * lr  # the steps did move the weights (Adam's first step is ~lr per weight)
    # 1e-5 (1% of a ~1e-3 step): the same gradients, clipped the same way, the same AdamW updates.
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in start)
    assert worst < 1e-5, worst
