"""The numbers behind data quality and the leaderboard, as plain functions over
plain lists or numpy arrays: no ORM, no Django. The end of the path from the
API: annotate/apis/quality.py and annotate/apis/leaderboard.py call
annotate/selectors/quality.py and annotate/selectors/leaderboard.py, which
gather the rows and call these. The tests check them against independent
implementations (`krippendorff`, `choix`, scikit-learn).

A campaign has 100,000 ratings and more, and these run inside a web request,
so the work is done on arrays with one entry per rating ("long" form: the
`*_ratings` / `*_arrays` functions) and no Python loop over ratings; the
list-of-units forms are thin wrappers over them.

- agreement.py: the rating categories, the ordinal scale,
  Krippendorff's alpha and percent agreement between annotators.
- consensus.py: Dawid–Skene consensus labels and per-annotator
  reliability, the reward-model sample weights it gives, medians per
  annotator.
- ranking.py: Bradley–Terry strengths with bootstrap intervals (as Chatbot
  Arena reports them), and the same with the answers' length difference as
  a covariate (Chatbot Arena's style control); the Elo-like display scale.
- intervals.py: a win rate's Wilson interval.
"""
