"""API authentication that also reads the user's roles.

DRF's TokenAuthentication reads the token and its user; every permission
check and campaign filter then read the user's groups again (two or three
times a call on the annotator's next/submit loop, bench/load.py). Here one
statement reads token, user and roles, and the roles ride on the user
object for this request (selectors.user_roles reads them from there).
SessionAuthentication (the browser pages) memoizes them on first use the
same way (SessionRoleAuthentication)."""
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework import exceptions
from drf_spectacular.authentication import SessionScheme
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from annotate.models import Role
from annotate.selectors import ROLES_ATTR, user_group_roles

User = get_user_model()


def _user_with_roles(key: str):
    agg = "string_agg(g.name, ',')" if connection.vendor == "postgresql" else "group_concat(g.name, ',')"
    roles = sorted(Role.values)
    # Only role names come back, so splitting on ',' is safe whatever other
    # groups are called.
    sql = (
        f"SELECT u.*, (SELECT {agg} FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id"
        f" WHERE ug.user_id = u.id AND g.name IN ({', '.join(['%s'] * len(roles))})) AS role_names"
        " FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id WHERE t.key = %s"
    )
    user = next(iter(User.objects.raw(sql, [*roles, key])), None)
    if user is not None:
        setattr(user, ROLES_ATTR, frozenset(user.role_names.split(",")) if user.role_names else frozenset())
    return user


class RoleTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        user = _user_with_roles(key)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, key


class SessionRoleAuthentication(SessionAuthentication):
    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            setattr(result[0], ROLES_ATTR, user_group_roles(user=result[0]))
        return result


class SessionRoleScheme(SessionScheme):
    """The OpenAPI security scheme of SessionRoleAuthentication: drf-spectacular
    knows DRF's session class, not subclasses of it (its token one does)."""

    target_class = "annotate.apis.authentication.SessionRoleAuthentication"
