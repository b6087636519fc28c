"""Invariants 2 and 3 under real concurrency: many annotators (threads, each
with its own PostgreSQL connection) leasing and rating at once.

transaction=True: every service call commits for real, so the row locks and
constraints are the ones production relies on. on_commit callbacks run, so
Celery is made eager (campaign.auto_train is off: no training starts)."""
import random
import threading
import time
import uuid
from collections import Counter

import pytest
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from annotate.models import Lease, Comparison, Rating
from annotate.services.leases import comparison_lease_next
from annotate.services.ratings import rating_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_eager")]


def run_threads(n: int, work) -> list:
    """Start n threads that call work(i) at the same moment; return what each
    returned (or the exception it raised)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def body(i):
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return results


def overfull_comparisons(k: int) -> list:
    """Comparisons whose ratings plus live leases exceed k, read in one statement."""
    live = Q(leases__status=Lease.Status.LEASED, leases__leased_until__gt=timezone.now())
    return list(
        Comparison.objects.annotate(live=Count("leases", filter=live))
        .filter(live__gt=k - F("rating_count"))
        .values_list("pk", "rating_count", "live")
    )


def test_thirty_annotators_at_once_never_exceed_k_ratings_or_rate_twice(make_open_round, make_user):
    # given: 12 comparisons, k=3, 30 annotators
    k, annotators = 3, [make_user("annotator") for _ in range(30)]
    round_ = make_open_round(prompts=12, overlap=k, annotators=annotators)
    campaign = round_.campaign
    stop = threading.Event()
    overfull: list = []

    def watch():
        # Sample the invariant while the annotators work, not only at the end.
        try:
            while not stop.is_set():
                overfull.extend(overfull_comparisons(k))
                time.sleep(0.005)
        finally:
            connection.close()

    def annotate(i):
        me, rng, done, empty = annotators[i], random.Random(i), [], 0
        while empty < 3:
            lease = comparison_lease_next(annotator=me, campaign=campaign)
            if lease is None:
                # Rows locked by others are skipped: look again before giving up.
                empty += 1
                time.sleep(0.02)
                continue
            empty = 0
            time.sleep(rng.random() * 0.005)  # read the answers
            choice = rng.choice(["A", "B", "tie", "both_bad"])
            _, created = rating_create(
                annotator=me, comparison_id=lease.comparison_id, choice=choice,
                strength=rng.randint(1, 3) if choice in ("A", "B") else None, idempotency_key=uuid.uuid4(),
            )
            assert created
            done.append(lease.comparison_id)
        return done

    watcher = threading.Thread(target=watch)
    watcher.start()
    # when
    try:
        results = run_threads(len(annotators), annotate)
    finally:
        stop.set()
        watcher.join()
    # then: no thread failed
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    # never more than k ratings per comparison, counted both ways, and all the work done
    per_comparison = Counter(Rating.objects.values_list("comparison_id", flat=True))
    counts = dict(Comparison.objects.values_list("pk", "rating_count"))
    assert max(per_comparison.values()) <= k
    assert per_comparison == Counter(counts)
    assert set(counts.values()) == {k}, "every comparison should have been filled by 30 annotators"
    # never a comparison twice for one annotator
    for done in results:
        assert len(done) == len(set(done))
    assert not Rating.objects.values("comparison", "annotator").annotate(n=Count("pk")).filter(n__gt=1).exists()
    # and at no moment more than k ratings plus live leases on a comparison
    assert overfull == []
    assert not Lease.objects.filter(status=Lease.Status.LEASED).exists()


def test_ten_annotators_asking_for_one_comparison_at_once_get_exactly_k_leases(make_open_round, make_user):
    # given: one comparison, k=2
    annotators = [make_user("annotator") for _ in range(10)]
    round_ = make_open_round(prompts=1, overlap=2, annotators=annotators)
    # when
    results = run_threads(10, lambda i: comparison_lease_next(annotator=annotators[i], campaign=round_.campaign))
    # then
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r is not None for r in results) == 2
    assert Lease.objects.filter(status=Lease.Status.LEASED).count() == 2


def test_an_annotator_waits_for_a_comparison_another_lease_holds_locked_instead_of_getting_no_work(
    make_open_round, make_user
):
    # given: one comparison with a free slot, its row locked by another
    # transaction (a lease in progress that will not take it after all)
    annotator = make_user("annotator")
    round_ = make_open_round(prompts=1, overlap=2, annotators=[annotator])
    comparison = round_.comparisons.get()
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        try:
            with transaction.atomic():
                Comparison.objects.select_for_update().get(pk=comparison.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(timeout=30)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    # when: every candidate is locked, so SKIP LOCKED finds none
    try:
        lease = comparison_lease_next(annotator=annotator, campaign=round_.campaign)
    finally:
        release.set()
        holder.join(timeout=30)
        timer.cancel()
    # then: it waited for the row rather than answering "no work"
    assert lease is not None and lease.comparison_id == comparison.pk
    assert Lease.objects.get(annotator=annotator).status == Lease.Status.LEASED


def test_same_idempotency_key_sent_ten_times_at_once_makes_one_rating(make_open_round, annotator):
    # given: a double-clicking, retrying client: ten submissions of one rating
    round_ = make_open_round(prompts=2, overlap=2, annotators=[annotator])
    lease = comparison_lease_next(annotator=annotator, campaign=round_.campaign)
    key = uuid.uuid4()
    # when
    results = run_threads(
        10,
        lambda i: rating_create(
            annotator=annotator, comparison_id=lease.comparison_id, choice="B", strength=3, idempotency_key=key
        ),
    )
    # then
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert Rating.objects.count() == 1
    assert {rating.pk for rating, _ in results} == {Rating.objects.get().pk}
    assert sum(created for _, created in results) == 1
    assert Comparison.objects.get(pk=lease.comparison_id).rating_count == 1


def test_two_annotators_racing_for_the_last_slot_after_an_expired_lease_make_at_most_k_ratings(
    make_open_round, make_user
):
    # given: k=1; the first annotator's lease expired, and a second annotator
    # leases the comparison while the first submits late, all at once
    first, second = make_user("annotator"), make_user("annotator")
    round_ = make_open_round(prompts=1, overlap=1, annotators=[first, second])
    lease = comparison_lease_next(annotator=first, campaign=round_.campaign)
    Lease.objects.update(leased_until=timezone.now())

    def work(i):
        if i == 0:
            return rating_create(annotator=first, comparison_id=lease.comparison_id, choice="A", strength=1,
                                 idempotency_key=uuid.uuid4())
        taken = comparison_lease_next(annotator=second, campaign=round_.campaign)
        if taken is None:
            return None
        return rating_create(annotator=second, comparison_id=taken.comparison_id, choice="B", strength=1,
                             idempotency_key=uuid.uuid4())

    # when
    results = run_threads(2, work)
    # then: whoever lost got a refusal (409) or no lease, never a second rating
    from annotate.errors import Conflict

    assert all(r is None or isinstance(r, (tuple, Conflict)) for r in results), results
    assert Rating.objects.count() == 1
    assert Comparison.objects.get().rating_count == 1
