from argparse import BooleanOptionalAction

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotate.errors import ServiceError
from annotate.models import Campaign, Role
from annotate.services.campaigns import campaign_admins_add
from annotate.services.users import user_create_or_update


class Command(BaseCommand):
    help = "Create or reset a user with roles and print their API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--role", action="append", default=[], choices=Role.values, help="repeat for several")
        parser.add_argument(
            "--campaign-admin", action="append", default=[], metavar="CAMPAIGN",
            help="make the user an admin of this campaign (its id or name; repeat for several); "
            "implies --role campaign_admin. A campaign admin manages only the campaigns they administer.",
        )

        parser.add_argument(
            "--staff", action=BooleanOptionalAction, default=None,
            help="make the user staff: every campaign and API, and the Django admin at /admin/ (--no-staff "
            "takes that away; without either it stays as it was)",
        )

    def handle(self, *args, username, password, role, campaign_admin, staff=None, **options):
        campaigns = []
        for ref in campaign_admin:
            found = Campaign.objects.filter(pk=int(ref)) if ref.isdigit() else Campaign.objects.filter(name=ref)
            if not found.exists():
                raise CommandError(f"No campaign {ref!r} (give its id or its exact name).")
            campaigns.append(found.get())
        if campaigns and Role.CAMPAIGN_ADMIN not in role:
            role = [*role, Role.CAMPAIGN_ADMIN]
        try:
            with transaction.atomic():
                _, token = user_create_or_update(username=username, password=password, roles=role, staff=staff)
                for campaign in campaigns:
                    campaign_admins_add(campaign=campaign, usernames=[username])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(token)
