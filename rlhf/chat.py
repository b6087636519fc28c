"""How prompts and responses become text: the one place, shared by reward
training, RLOO reward scoring and generation (the same template and the
same EOS everywhere, or the reward model scores text it never saw in
training).

Formatted text already carries whatever special tokens the template wants,
so every caller tokenizes it with `add_special_tokens=False` (ENCODE_KWARGS);
letting the tokenizer add a BOS on top would double it for Llama-style templates.

Library only; the CLIs that use it: `python -m rlhf.train_reward`, `python -m rlhf.generate`.
"""

from __future__ import annotations

from typing import Any

ENCODE_KWARGS = {"add_special_tokens": False}


def _messages(prompt: Any) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return [{"role": t["role"], "content": t["content"]} for t in prompt]
    raise TypeError(f"prompt must be a str or a list of {{'role', 'content'}} turns, got {type(prompt).__name__}")


def format_prompt(tokenizer, prompt: Any) -> str:
    """The text a model sees before its answer starts."""
    messages = _messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # Base models without a template: plain text, turns on their own lines.
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant: "


def format_pair_text(tokenizer, prompt: Any, response: str) -> str:
    """Prompt + response + EOS: what the reward model scores."""
    return format_prompt(tokenizer, prompt) + response + (tokenizer.eos_token or "")
