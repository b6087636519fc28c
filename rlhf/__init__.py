"""Ratchet's ML library: preference data, reward models, supervised
fine-tuning, RLOO and DPO policy steps, generation and the checksummed model
store.

Kept free of Django, and this package's import stays free of torch: the web
process imports `rlhf.store`, `rlhf.data` and `rlhf.configs`, which must not
pull in torch. Heavy modules (`rlhf.reward`, `rlhf.rloo`, `rlhf.dpo`,
`rlhf.sft`, `rlhf.kl`, `rlhf.generate`, `rlhf.logprobs`, `rlhf.packing`, `rlhf.scoring`,
`rlhf.checkpoint`, `rlhf.tiny`, `rlhf.smollm2`) import torch themselves when a
worker imports them.

    python -m rlhf.train_reward --data pairs.jsonl --base PATH --out DIR
    python -m rlhf.train_policy --prompts p.jsonl --policy PATH --ref PATH --reward PATH --out DIR
    python -m rlhf.train_dpo --data pairs.jsonl --policy PATH --ref PATH --out DIR
    python -m rlhf.train_sft --data conversations.jsonl --base PATH --out DIR
    python -m rlhf.generate --model PATH --prompts prompts.jsonl --out answers.jsonl
    python -m rlhf.smollm2 --out DIR

Metrics. Every trainer reports `<stage>/<quantity>` while it trains and
`eval/<stage>/<quantity>` for held-out pairs (the reward model's test split;
`eval/reward/val_<quantity>` for its validation split); the stage is `reward`
(the reward model), `policy` (the policy step, RLOO and DPO alike) or `sft`
(supervised fine-tuning on curated answers). The
trainers pass them to their `on_metrics(step, metrics)` callback and return
the last ones (plus the final-only ones) as their result, which meta.json
keeps. Rewards are in the reward model's units, KL in nats per answer.

    reward/loss                   mean Bradley–Terry (rankings: Plackett–Luce) loss per step (with centering)
    reward/accuracy               share of pairs scored r_chosen > r_rejected
    reward/margin                 mean r_chosen - r_rejected
    reward/reward_mean            mean reward of both answers of the pairs
    reward/reward_std             standard deviation of those rewards
    reward/pairs_per_s            pairs trained per second since the last report (evals excluded)
    reward/tokens_per_s           chosen + rejected tokens per second, the same way
    reward/tokens                 chosen + rejected tokens so far (as TRL's num_tokens counts them)
    reward/tokens_computed        positions the model ran so far, padding excluded
    reward/tokens_padded          positions the model ran so far, padding included
    reward/steps                  optimizer steps taken (final only)
    reward/stopped_early          whether `patience` stopped training (final only)
    reward/kept_step              the step whose weights were kept: the lowest eval/reward/val_loss
                                  with `patience`, else the last step (final only)
    eval/reward/loss              weighted Bradley–Terry loss on the test pairs (held out, reported only)
    eval/reward/accuracy          test share of pairs scored r_chosen > r_rejected
    eval/reward/margin            test mean r_chosen - r_rejected
    eval/reward/reward_mean       test mean reward of both answers
    eval/reward/reward_std        test standard deviation of those rewards
    eval/reward/accuracy_margin_<lo>-<hi>  test accuracy of the pairs whose |r_chosen - r_rejected|
                                  is in [lo, hi) (buckets 0-0.5, 0.5-1, 1-2, 2-inf): calibration
    eval/reward/pairs_margin_<lo>-<hi>     how many test pairs fell in that bucket
    eval/reward/split             "heldout", or "train" when too few prompts to hold any out (text)
    eval/reward/val_loss          the same loss on the validation pairs: what early stopping (and
                                  whoever chooses settings) reads; the test pairs decide nothing
    eval/reward/val_accuracy      validation share of pairs scored r_chosen > r_rejected
    eval/reward/val_margin        validation mean r_chosen - r_rejected
    eval/reward/val_reward_mean   validation mean reward of both answers
    eval/reward/val_reward_std    validation standard deviation of those rewards
    eval/reward/val_split         "heldout", or "train" when too few training prompts to hold any out
                                  (text; no val_* metrics at all with val_fraction 0)
    eval/reward/aspect_<name>_accuracy  with aspect heads (RewardConfig.aspects): test share of the pairs
                                  rating <name> (not "same") whose <name> head orders them as rated
    eval/reward/aspect_<name>_pairs     how many test pairs rated <name> (not "same")
    eval/reward/combined_accuracy with aspect heads: test share of pairs the saved score (the heads'
                                  combination) orders as the overall choice
    eval/reward/ranking_loss      with ranking rows: weighted Plackett–Luce loss on the test rankings
    eval/reward/ranking_accuracy  test share of the rankings' implied pairs (answers in different tie
                                  groups) scored better > worse; eval/reward/rankings: how many
                                  (every eval/reward/ metric above also as eval/reward/val_ on validation)

    policy/loss                   mean loss per optimizer step (RLOO: clipped surrogate; DPO: DPO loss)
    policy/kl                     sequence KL of the policy to the reference, nats per answer
                                  (RLOO: on each round's samples; DPO: each budget check's estimate)
    policy/reward_mean            RLOO: mean reward-model score of the round's samples
    policy/advantage_std          RLOO: standard deviation of the round's leave-one-out advantages
    policy/completion_length      RLOO: mean tokens per sampled answer
    policy/accuracy               DPO: share of pairs whose chosen implicit reward is above the rejected one
                                  (ranking rows: their implied pairs, answers of different tie groups)
    policy/margin                 DPO: mean chosen - rejected implicit reward
    policy/chosen_reward          DPO: mean implicit reward beta * (log pi - log ref) of the chosen answers
    policy/rejected_reward        DPO: the same for the rejected answers
    policy/steps                  DPO: optimizer steps taken (final only)
    policy/kl_budget              the KL budget, nats per answer (with a budget; final)
    policy/kl_to_base             KL estimate of the weights the step kept (None: its starting weights)
    policy/kl_kept_step           the update (RLOO: round) those weights are from
    policy/kl_budget_stopped      whether the budget stopped the step
    policy/kl_over_estimate       the estimate that stopped it (only when it did)

    sft/loss                      mean loss per optimizer step; a step's loss is the mean NLL over all
                                  assistant tokens of its batch (nats per token, as TRL's SFTTrainer)
    sft/token_accuracy            share of assistant tokens the model's top token predicted (TRL's mean_token_accuracy)
    sft/conversations_per_s       conversations trained per second since the last report (evals excluded)
    sft/tokens_per_s              conversation tokens (prompt, template and answer) per second, the same way
    sft/tokens                    conversation tokens so far (as TRL's num_tokens counts them, padding excluded)
    sft/assistant_tokens          assistant tokens so far: the tokens the loss is on
    sft/padding_share             share of the positions the model ran that were padding, since the last report
    sft/steps                     optimizer steps taken (final only)
    eval/sft/loss                 mean NLL per assistant token of the held-out conversations
    eval/sft/perplexity           exp(eval/sft/loss)
    eval/sft/token_accuracy       held-out share of assistant tokens the top token predicted
    eval/sft/split                "heldout", or "train" when too few prompts to hold any out (text)
"""
