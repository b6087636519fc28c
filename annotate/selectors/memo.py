"""Heavy statistics computed once per change of what they read: the
leaderboard's fits and bootstraps, the quality page's Dawid-Skene and
agreement, the reward model's sample weights. At 100,000 ratings these take
seconds; recomputing them on every request is what made the models and
quality pages slow (bench/console_pages.py).

A result is kept in Django's cache (settings.CACHES: Redis where the project
runs on Redis, a file cache under var/ otherwise, so the web processes and
the workers share it) under a key made of everything it reads. Nothing is
ever invalidated: a change to an input makes a new key, and the old entry
expires (TIMEOUT). What each key holds and why it is complete is said where
the key is built (selectors/leaderboard.py, selectors/quality.py); the part
every key shares is `ratings_state`."""
import hashlib
import logging
import pickle

from django.core.cache import cache
from django.db import connection

from annotate.models import Campaign, Comparison, Round

logger = logging.getLogger(__name__)

# A day: an entry of a state that moved on is never read again, so this only
# bounds how long it takes room in the cache.
TIMEOUT = 24 * 3600
# Bump when the statistics' code changes what they return, so a deploy does
# not serve results of the old code.
CODE_VERSION = 1


def ratings_state(*, campaign: Campaign) -> tuple:
    """What the campaign's ratings and comparisons are, in one query: the
    comparisons' count, highest id, gold pairs and ratings (rating_count,
    kept with each rating in the same transaction and row lock by
    services/ratings.py, the only place a rating is written). Ratings are
    only ever added (never edited; deleted only with their comparison), and a
    comparison is written once with its answers, sides and gold choice, so
    any change to what a statistic reads from them moves one of these: a new
    rating the rating sum, a deleted comparison the count, a new one the
    highest id. The database's own identity comes with it (PostgreSQL: its
    oid, new whenever it is recreated, e.g. a test database), since ids start
    again in a new one.

    Not the highest rating id: finding it joins every rating of the campaign
    (175 ms at 100,000 ratings on the bench box, EXPLAIN ANALYZE), where this
    reads the comparisons alone (7-15 ms at 20,000: one sequential scan and a
    hash join with the rounds; bench/RESULTS.md)."""
    t = {m: m._meta.db_table for m in (Comparison, Round)}
    identity = (
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
        if connection.vendor == "postgresql" else "NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {identity}, COUNT(c.id), MAX(c.id), COUNT(c.id) FILTER (WHERE c.gold_choice <> ''),"
            f" SUM(c.rating_count) FROM {t[Comparison]} c JOIN {t[Round]} r ON r.id = c.round_id"
            " WHERE r.campaign_id = %s",
            [campaign.pk],
        )
        row = tuple(cursor.fetchone())
    if row[0] is None:
        row = (connection.settings_dict["NAME"], *row[1:])
    return (campaign.pk, *row)


def memoized(name: str, key: tuple, compute):
    """compute()'s result, from the cache when `key` (every input of it) was
    seen before. The result is pickled by every backend, so a caller may
    change what it gets back."""
    digest = hashlib.sha256(pickle.dumps((CODE_VERSION, key), protocol=4)).hexdigest()
    cache_key = f"stats:{name}:{digest}"
    try:
        found = cache.get(cache_key)
    except Exception:  # a cache that is down (Redis gone) slows the page; it must not break it
        logger.warning("stats cache unreachable; computing %s", name, exc_info=True)
        return compute()
    if found is not None:
        return found
    result = compute()
    try:
        cache.set(cache_key, result, TIMEOUT)
    except Exception:
        logger.warning("stats cache unreachable; %s not kept", name, exc_info=True)
    return result
