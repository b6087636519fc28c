"""The gold pool: import pairs with a known answer, and read the pool with
how each pair has been answered."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404
from annotate.apis.uploads import ImportApi
from annotate.selectors.gold import gold_pool, gold_pool_totals
from annotate.services.gold import gold_import


class GoldImportApi(ImportApi):
    """Import preference pairs with a known answer into the campaign's gold
    pool. JSONL: `{"prompt" (or "messages"), "chosen", "rejected"}`, optional
    `external_id`, `metadata`, `source` (TRL's preference schema; the
    shipped data/finegrainedrlhf_qa_feedback_dev.jsonl works as it is). CSV:
    the same columns, `messages` and `metadata` as JSON. Every line is checked
    first; one bad line imports nothing and the answer names each bad line.
    `?dry_run=1`: check only, write nothing. Importing again adds nothing.
    Copies of the pairs are mixed into each new round at the campaign's
    gold_frequency."""

    importer = staticmethod(gold_import)


class GoldPoolApi(APIView):
    """The campaign's gold pool, a page at a time: each pair's prompt, chosen
    and rejected answers, how many rounds used it, its gold answers and their
    accuracy."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
        # Bounded: the database takes no offset past a bigint (a 500 before).
        offset = serializers.IntegerField(min_value=0, max_value=10**9, default=0)

    class OutputSerializer(serializers.Serializer):
        class PairSerializer(serializers.Serializer):
            id = serializers.IntegerField()
            external_id = serializers.CharField()
            prompt = serializers.CharField(source="prompt.text")
            prompt_turns = serializers.JSONField(source="prompt.turns", allow_null=True)
            chosen = serializers.CharField(source="chosen.text")
            rejected = serializers.CharField(source="rejected.text")
            used = serializers.IntegerField(help_text="rounds it was mixed into")
            answers = serializers.IntegerField()
            correct = serializers.IntegerField()
            accuracy = serializers.SerializerMethodField()
            created_at = serializers.DateTimeField()

            def get_accuracy(self, pair) -> float | None:
                return pair.correct / pair.answers if pair.answers else None

        campaign = serializers.IntegerField()
        count = serializers.IntegerField()
        answers = serializers.IntegerField()
        correct = serializers.IntegerField()
        accuracy = serializers.FloatField(allow_null=True)
        pairs = PairSerializer(many=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit, offset = params.validated_data["limit"], params.validated_data["offset"]
        pool = gold_pool(campaign=campaign)
        totals = gold_pool_totals(campaign=campaign)
        body = {
            "campaign": campaign.pk,
            **totals,
            "pairs": list(pool[offset : offset + limit]),
        }
        return Response(self.OutputSerializer(body).data)
