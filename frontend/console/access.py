"""Who may see and change console pages."""
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseForbidden

from annotate.models import Role
from annotate.selectors import user_roles


def console_view(*, post_role: str | None = None, post_refusal: str = ""):
    """Logged in, and a campaign admin or ML engineer (staff count as both).
    A POST needs `post_role` (None: the page takes no POST from anyone
    special). Sets request.can_edit (admin) and request.can_train (engineer)
    so templates show only the controls a user may use."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            roles = user_roles(user=request.user)
            if not roles & {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}:
                return HttpResponseForbidden("The console is for campaign admins and ML engineers.")
            request.can_edit = Role.CAMPAIGN_ADMIN in roles
            request.can_train = Role.ML_ENGINEER in roles
            if post_role and request.method == "POST" and post_role not in roles:
                return HttpResponseForbidden(post_refusal)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
