"""Invariant 2 for k-sets under real concurrency: a k-set's lease covers the
whole set, and two annotators racing for it (threads, each with its own
PostgreSQL connection) get exactly the rules pairs get."""
import uuid

import pytest
from django.utils import timezone

from annotate.errors import Conflict
from annotate.models import Comparison, Lease, Rating
from annotate.services.leases import comparison_lease_next
from annotate.services.ratings import rating_create
from tests.annotate.test_concurrency import run_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_eager")]


def test_two_annotators_asking_for_one_k_set_lease_at_once_get_one_lease_and_one_ranking(make_open_round, make_user):
    # given: one k-set of 4 answers, overlap k = 1, two annotators
    first, second = make_user("annotator"), make_user("annotator")
    round_ = make_open_round(prompts=1, overlap=1, rank_k=4, annotators=[first, second])
    people = [first, second]

    def work(i):
        lease = comparison_lease_next(annotator=people[i], campaign=round_.campaign)
        if lease is None:
            return None
        return rating_create(annotator=people[i], comparison_id=lease.comparison_id, choice="",
                             ranking=[[i + 1], [4], [2 - i, 3]], idempotency_key=uuid.uuid4())

    # when
    results = run_threads(2, work)
    # then: one of them leased the whole set and ranked it; the other got nothing
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(r is None for r in results) == [False, True]
    assert Lease.objects.count() == 1 and Rating.objects.count() == 1
    rating = Rating.objects.get()
    assert rating.choice == "ranking" and sorted(p for g in rating.ranking for p in g) == [1, 2, 3, 4]
    assert Comparison.objects.get().rating_count == 1


def test_two_annotators_racing_for_a_k_set_after_an_expired_lease_make_at_most_k_rankings(make_open_round, make_user):
    # given: k = 1; the first annotator's lease on the k-set expired, and a second
    # annotator leases it while the first submits late, all at once
    first, second = make_user("annotator"), make_user("annotator")
    round_ = make_open_round(prompts=1, overlap=1, rank_k=3, annotators=[first, second])
    lease = comparison_lease_next(annotator=first, campaign=round_.campaign)
    Lease.objects.update(leased_until=timezone.now())

    def work(i):
        if i == 0:
            return rating_create(annotator=first, comparison_id=lease.comparison_id, choice="",
                                 ranking=[[1], [2], [3]], idempotency_key=uuid.uuid4())
        taken = comparison_lease_next(annotator=second, campaign=round_.campaign)
        if taken is None:
            return None
        return rating_create(annotator=second, comparison_id=taken.comparison_id, choice="",
                             ranking=[[3], [1, 2]], idempotency_key=uuid.uuid4())

    # when
    results = run_threads(2, work)
    # then: whoever lost got a refusal (409) or no lease, never a second ranking
    assert all(r is None or isinstance(r, (tuple, Conflict)) for r in results), results
    assert Rating.objects.count() == 1
    assert Comparison.objects.get().rating_count == 1


def test_two_annotators_share_a_k_set_at_overlap_2_and_a_third_gets_nothing(make_open_round, make_user):
    people = [make_user("annotator") for _ in range(3)]
    round_ = make_open_round(prompts=1, overlap=2, rank_k=4, annotators=people)

    def work(i):
        lease = comparison_lease_next(annotator=people[i], campaign=round_.campaign)
        if lease is None:
            return None
        return rating_create(annotator=people[i], comparison_id=lease.comparison_id, choice="",
                             ranking=[[1, 2, 3, 4]], idempotency_key=uuid.uuid4())

    results = run_threads(3, work)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r is not None for r in results) == 2
    assert Rating.objects.count() == 2 and Comparison.objects.get().rating_count == 2
    assert len(set(Rating.objects.values_list("annotator_id", flat=True))) == 2
