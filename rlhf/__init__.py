"""Ratchet's ML library: preference data, reward models, RLOO policy steps,
generation and the checksummed model store.

Kept free of Django, and this package's import stays free of torch: the web
process imports `rlhf.store` and `rlhf.data`, which must not pull in torch.
Heavy modules (`rlhf.reward`, `rlhf.rloo`, `rlhf.dpo`, `rlhf.generate`, `rlhf.tiny`,
`rlhf.smollm2`) import torch themselves when a worker imports them.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR
    python -m rlhf.train_policy --prompts p.jsonl --policy PATH --ref PATH --reward PATH --out DIR
    python -m rlhf.train_dpo --data pairs.jsonl --policy PATH --ref PATH --out DIR
    python -m rlhf.generate --model PATH --prompts prompts.jsonl --out answers.jsonl
    python -m rlhf.smollm2 --out DIR
"""
