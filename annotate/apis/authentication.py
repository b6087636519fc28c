"""API authentication that also reads the user's roles.

DRF's TokenAuthentication reads the token and its user; every permission
check and campaign filter then read the user's groups again (two or three
times a call on the annotator's next/submit loop, bench/load.py). Here one
statement reads token, user and roles, and the roles ride on the user
object for this request (selectors.user_roles reads them from there).
SessionAuthentication (the browser pages) memoizes them on first use the
same way (SessionRoleAuthentication)."""
import functools

from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework import exceptions
from drf_spectacular.authentication import SessionScheme
from rest_framework.authentication import SessionAuthentication, TokenAuthentication

from annotate.models import Role
from annotate.selectors.access import ROLES_ATTR, user_group_roles

User = get_user_model()


@functools.cache
def _user_statement(vendor: str):
    """The statement that reads token, user and roles, with the role names
    it takes, the user's fields in its column order and, per field, the
    converters it needs from this database (SQLite's dates and booleans;
    none on PostgreSQL), as the ORM applies them. Built once per process:
    only the backend changes them (even Role.values costs a list per call)."""
    fields = User._meta.concrete_fields
    roles = sorted(Role.values)
    agg = "string_agg(g.name, ',')" if vendor == "postgresql" else "group_concat(g.name, ',')"
    # Only role names come back, so splitting on ',' is safe whatever other
    # groups are called.
    sql = (
        f"SELECT {', '.join(f'u.{connection.ops.quote_name(f.column)}' for f in fields)},"
        f" (SELECT {agg} FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id"
        f" WHERE ug.user_id = u.id AND g.name IN ({', '.join(['%s'] * len(roles))})) AS role_names"
        " FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id WHERE t.key = %s"
    )
    converters = [[*connection.ops.get_db_converters(f.cached_col), *f.get_db_converters(connection)] for f in fields]
    return sql, roles, fields, [f.attname for f in fields], converters


def _user_with_roles(key: str):
    # A plain cursor, not User.objects.raw(): the raw queryset's column
    # mapping cost as much as running the statement (bench/load.py).
    sql, roles, fields, names, converters = _user_statement(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*roles, key])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row[:-1])
    for i, field_converters in enumerate(converters):
        for convert in field_converters:
            values[i] = convert(values[i], fields[i].cached_col, connection)
    user = User.from_db(connection.alias, names, values)
    role_names = row[-1]
    setattr(user, ROLES_ATTR, frozenset(role_names.split(",")) if role_names else frozenset())
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
