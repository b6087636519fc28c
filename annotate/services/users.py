from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

from annotate.errors import ValidationFailed
from annotate.models import Role

User = get_user_model()


@transaction.atomic
def user_create_or_update(*, username: str, password: str, roles: list[str],
                          staff: bool | None = None) -> tuple[User, str]:
    """Create (or reset) a user with the given roles; returns (user, API token).
    `staff` True makes them staff and superuser (every campaign and API, and
    the Django admin at /admin/, which shows a bare staff user nothing);
    False takes both away; None leaves them as they were."""
    unknown = set(roles) - set(Role.values)
    if unknown:
        raise ValidationFailed(f"Unknown role(s) {sorted(unknown)}; use {', '.join(Role.values)}.")
    user, _ = User.objects.get_or_create(username=username)
    user.set_password(password)
    if staff is not None:
        user.is_staff = user.is_superuser = staff
    user.save()
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in roles])
    token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


# Long enough to type once from the screen it is shown on, and ~96 bits.
GENERATED_PASSWORD_BYTES = 12


@transaction.atomic
def annotator_create(*, username: str, password: str | None = None) -> tuple[User, str | None]:
    """A new account in the annotator group, made by a campaign admin. Without
    a password one is generated and returned (the only time anyone sees it:
    only its hash is stored); with one, (user, None). An existing username is
    a Conflict: this never resets someone's password."""
    import secrets

    from django.contrib.auth.password_validation import validate_password
    from django.contrib.auth.validators import UnicodeUsernameValidator
    from django.core.exceptions import ValidationError

    from annotate.errors import Conflict

    username = (username or "").strip()
    if not username or len(username) > 150:
        raise ValidationFailed("username must be 1 to 150 characters.", details={"username": "1 to 150 characters"})
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise ValidationFailed(
            f"username {username!r} may hold only letters, digits and @ . + - _",
            details={"username": "letters, digits and @ . + - _ only"},
        ) from None
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(f"A user named '{username}' already exists; add them to the campaign instead.",
                       details={"username": "already exists; add them to the campaign instead"})
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    else:
        try:
            validate_password(password, user=User(username=username))
        except ValidationError as exc:
            raise ValidationFailed("password: " + " ".join(exc.messages), details={"password": " ".join(exc.messages)}) from None
    user = User.objects.create_user(username=username, password=password)
    user.groups.set([Group.objects.get_or_create(name=Role.ANNOTATOR)[0]])
    Token.objects.get_or_create(user=user)
    return user, generated
