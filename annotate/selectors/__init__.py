"""Selectors: every read that is more than a one-line lookup, one module per
concern, mirroring annotate/services/ (which writes). Import from the module;
nothing is re-exported here.

- access.py: a user's roles; the campaigns a user sees (to rate), reads
  (console, admin and engineer APIs) and manages; that rule as SQL for the
  annotator's hot path.
- rounds.py: the current round, a round by its index, round progress and
  completeness, where "today" starts.
- leases.py: what the next API sends with a lease; an annotator's progress.
- run_page.py: a training run as its console page shows it (stage timeline,
  ETA, metrics laid out), two runs compared.
- training.py: the preference pairs training reads; training runs; model
  versions and their lineage; two policy versions' answers side by side.
- quality.py: agreement, Dawid-Skene reliability, the per-annotator table,
  reward-model sample weights (the maths: annotate/stats/).
- leaderboard.py: Bradley-Terry scores and each round's win rate (the maths:
  annotate/stats/).
- exports.py: the ratings export's rows; the campaign's exports.
- console.py: the console's campaigns list.
- memberships.py: a campaign's annotator pool and its admins.
- gold.py: the gold pool and how its pairs have been answered.
- prompts.py: a campaign's prompts as the console lists them.
"""
