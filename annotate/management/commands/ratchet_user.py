from django.core.management.base import BaseCommand, CommandError

from annotate.errors import ServiceError
from annotate.models import Role
from annotate.services.users import user_create_or_update


class Command(BaseCommand):
    help = "Create or reset a user with roles and print their API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--role", action="append", default=[], choices=Role.values, help="repeat for several")

    def handle(self, *args, username, password, role, **options):
        try:
            _, token = user_create_or_update(username=username, password=password, roles=role)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(token)
