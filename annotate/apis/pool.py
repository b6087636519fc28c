"""Annotator pools: who rates in a campaign, their daily limits, pause and
removal; annotator accounts made by campaign admins; and who administers a
campaign (set by staff)."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import (
    AdminsAndEngineersRead,
    IsCampaignAdmin,
    IsStaff,
    managed_campaign_or_404,
    readable_campaign_or_404,
)
from annotate.apis.schema import CONFLICT
from annotate.models import Membership
from annotate.selectors.memberships import campaign_admins, campaign_members
from annotate.services.campaigns import campaign_admin_remove, campaign_admins_add
from annotate.services.memberships import UNSET, membership_update, memberships_add
from annotate.services.users import annotator_create


class MemberOutputSerializer(serializers.Serializer):
    username = serializers.CharField()
    status = serializers.CharField(source="membership.status")
    paused_reason = serializers.CharField(source="membership.paused_reason")
    paused_automatically = serializers.BooleanField(source="membership.paused_automatically")
    daily_limit = serializers.IntegerField(source="membership.daily_limit", allow_null=True)
    ratings_today = serializers.IntegerField()
    ratings_total = serializers.IntegerField()
    added_at = serializers.DateTimeField(source="membership.created_at")


class CampaignMembersApi(AdminsAndEngineersRead, APIView):
    """GET: the campaign's pool with each member's standing and ratings
    (admins and engineers; removed members too, their ratings stay).
    POST: add annotators by username, optionally with a daily limit
    (campaign admins); adding a removed annotator reinstates them."""

    write_permission = IsCampaignAdmin

    class AddInputSerializer(serializers.Serializer):
        usernames = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1, max_length=10000)
        daily_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100000)

    @extend_schema(responses=MemberOutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        return Response(MemberOutputSerializer(campaign_members(campaign=campaign), many=True).data)

    @extend_schema(request=AddInputSerializer, responses={200: MemberOutputSerializer(many=True)})
    def post(self, request, campaign_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        serializer = self.AddInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        memberships = memberships_add(campaign=campaign, **serializer.validated_data)
        added = {m.annotator_id for m in memberships}
        rows = [row for row in campaign_members(campaign=campaign) if row["membership"].annotator_id in added]
        return Response(MemberOutputSerializer(rows, many=True).data)


class CampaignMemberUpdateApi(APIView):
    """Change one member: `status` active (reinstate), paused (with a `reason`,
    which the annotator is shown) or removed (their ratings stay);
    `daily_limit` a number, or null for no limit."""

    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Membership.Status.choices, required=False)
        reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
        daily_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100000)

    @extend_schema(request=InputSerializer, responses=MemberOutputSerializer)
    def patch(self, request, campaign_id: int, username: str):
        campaign = managed_campaign_or_404(request, campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        membership = membership_update(
            campaign=campaign, username=username, status=data.get("status"), reason=data.get("reason", ""),
            daily_limit=data["daily_limit"] if "daily_limit" in data else UNSET,
        )
        row = next(r for r in campaign_members(campaign=campaign) if r["membership"].pk == membership.pk)
        return Response(MemberOutputSerializer(row).data)


class UserCreateApi(APIView):
    """A new annotator account (in the annotator group). Leave `password` out
    and one is generated: it is in this answer only, never again."""

    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(required=False, allow_blank=True, max_length=128, trim_whitespace=False)

    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())
        generated_password = serializers.CharField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 409: CONFLICT})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, generated = annotator_create(**serializer.validated_data)
        body = {"username": user.username, "roles": ["annotator"], "generated_password": generated}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class CampaignAdminOutputSerializer(serializers.Serializer):
    username = serializers.CharField()


class CampaignAdminsApi(AdminsAndEngineersRead, APIView):
    """GET: who administers the campaign (anyone who may read its console).
    POST: make users admins of it (staff only); each gets the campaign_admin
    role if they lack it. An admin manages only the campaigns they
    administer; to everyone else in the role those campaigns do not exist."""

    write_permission = IsStaff

    class AddInputSerializer(serializers.Serializer):
        usernames = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1, max_length=1000)

    @extend_schema(responses=CampaignAdminOutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        return Response(CampaignAdminOutputSerializer(campaign_admins(campaign=campaign), many=True).data)

    @extend_schema(request=AddInputSerializer, responses={200: CampaignAdminOutputSerializer(many=True)})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        serializer = self.AddInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign_admins_add(campaign=campaign, usernames=serializer.validated_data["usernames"])
        return Response(CampaignAdminOutputSerializer(campaign_admins(campaign=campaign), many=True).data)


class CampaignAdminRemoveApi(APIView):
    """Take one admin off the campaign (staff only); they keep the role and
    the other campaigns they administer."""

    permission_classes = [IsStaff]

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, campaign_id: int, username: str):
        campaign = readable_campaign_or_404(request, campaign_id)
        campaign_admin_remove(campaign=campaign, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)
