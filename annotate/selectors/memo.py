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
every key shares is `ratings_state`. The leaderboard and quality report are
also kept as the campaign's latest, which the pages and APIs are shown while
a task computes a new state's (memoized_latest)."""
import hashlib
import logging
import pickle

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from annotate.models import Campaign, Comparison, Round
from config.celery import task_named

logger = logging.getLogger(__name__)

# A day: an entry of a state that moved on is never read again, so this only
# bounds how long it takes room in the cache.
TIMEOUT = 24 * 3600
# Bump when the statistics' code changes what they return, so a deploy does
# not serve results of the old code.
CODE_VERSION = 2


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


# How long a refresh may be under way before another visit may send one
# again: longer than the slowest statistic takes (the models page's, 25 s at
# 100 rounds and 100,000 ratings on the bench box), short enough that a lost
# message (a worker killed mid-task) is sent again within minutes.
REFRESH_LOCK_S = 300
REFRESH_TASK = "annotate.tasks.stats_refresh_task"


def _digest(*parts) -> str:
    return hashlib.sha256(pickle.dumps((CODE_VERSION, *parts), protocol=4)).hexdigest()


def _as_of(entry: dict, *, state: tuple, stale: bool, stale_ok: bool) -> dict:
    """The result, with `stale` and `as_of` where the caller takes stale ones."""
    if not stale_ok:
        return entry["result"]
    now = state[5] or 0
    return {**entry["result"], "stale": stale, "as_of": {
        "ratings": entry["ratings"], "ratings_now": now, "ratings_behind": now - entry["ratings"],
        "computed_at": entry["computed_at"],
    }}


def memoized_latest(name: str, *, state: tuple, params: dict, key: tuple, compute, stale_ok: bool):
    """compute()'s result as memoized() gives it; with `stale_ok`, plus
    `stale` and `as_of` ({ratings: the campaign's ratings count it was
    computed at, ratings_now, ratings_behind, computed_at}). Each result is
    also kept as the latest of (name, campaign, params). With `stale_ok` (the console pages and the APIs), a state not
    seen yet is answered at once with that latest result, marked stale, and
    one stats_refresh_task is sent (a lock in the cache: a burst of visits
    sends one) to compute the current state and keep it under both keys:
    on a campaign being rated every visit meets a new state, and computing
    inline would make each of them wait seconds (bench/console_pages.py).
    Inline only with nothing to show (the first visit), when the broker
    refuses the message, or without `stale_ok` (the task itself, and code
    that needs the current figures)."""
    exact = f"stats:{name}:{_digest(key)}"
    slot = _digest(state[:2], params)  # the campaign and its database's identity: ids repeat across databases
    latest, lock = f"stats:{name}:latest:{slot}", f"stats:{name}:refreshing:{slot}"
    try:
        found = cache.get_many([exact, latest] if stale_ok else [exact])
    except Exception:  # a cache that is down slows the page; it must not break it
        logger.warning("stats cache unreachable; computing %s", name, exc_info=True)
        found = {}
    if exact in found:
        return _as_of(found[exact], state=state, stale=False, stale_ok=stale_ok)
    if latest in found and _refresh_sent(name, lock, state, params):
        return _as_of(found[latest], state=state, stale=True, stale_ok=stale_ok)
    entry = {"result": compute(), "ratings": state[5] or 0, "computed_at": timezone.now()}
    try:
        # Read again just before writing: a compute of a newer state (more
        # ratings) that finished while this one ran stays the latest; ratings
        # are only ever added, so fewer means older.
        newer = cache.get(latest)
        keep = {exact: entry} if newer is not None and newer["ratings"] > entry["ratings"] else {
            exact: entry, latest: entry}
        cache.set_many(keep, TIMEOUT)
    except Exception:
        logger.warning("stats cache unreachable; %s not kept", name, exc_info=True)
    return _as_of(entry, state=state, stale=False, stale_ok=stale_ok)


def _refresh_sent(name: str, lock: str, state: tuple, params: dict) -> bool:
    """Whether a refresh of the campaign's `name` is under way: sent now, or
    by an earlier visit whose lock still holds. False when the broker
    refuses the message (then the caller computes inline)."""
    try:
        if not cache.add(lock, 1, REFRESH_LOCK_S):
            return True
    except Exception:
        return False
    try:
        task_named(REFRESH_TASK).apply_async(kwargs={"name": name, "campaign_id": state[0], "params": params})
    except Exception:
        logger.warning("broker refused the %s refresh; computing inline", name, exc_info=True)
        try:
            cache.delete(lock)  # so a visit once the broker is back sends it
        except Exception:
            pass
        return False
    return True


def refresh_done(name: str, *, campaign: Campaign, params: dict) -> None:
    """Let the next visit that meets a new state send a refresh again."""
    try:
        cache.delete(f"stats:{name}:refreshing:{_digest(ratings_state(campaign=campaign)[:2], params)}")
    except Exception:
        logger.warning("stats cache unreachable; %s refresh lock left to expire", name, exc_info=True)
