from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotate.errors import ValidationFailed
from annotate.models import Role

User = get_user_model()


@transaction.atomic
def user_create_or_update(*, username: str, password: str, roles: list[str]) -> tuple[User, str]:
    """Create (or reset) a user with the given roles; returns (user, API token)."""
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ValidationFailed(f"Unknown role(s) {sorted(unknown)}; use {', '.join(Role.values)}.")
    user, _ = User.objects.get_or_create(username=username)
    user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key
