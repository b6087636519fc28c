"""Simulated raters without Django: the preference and the rater's decision
(preference.py), the raters' loop and their config (raters.py), the client
a rater calls the platform through (clients.py). bench/ imports these with
no Django settings; annotate/services/simulation.py makes the accounts and
runs the raters."""
