import hashlib
import math
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_cache_control
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_safe
from django.views.static import serve

from annotate.models import Role
from annotate.selectors.access import campaigns_visible_to, user_roles
from annotate.selectors.console import campaign_console_rows
from annotate.selectors.leases import annotator_progress_by_campaign
from annotate.services.rating_form import rating_form_version

STATIC_DIR = Path(__file__).resolve().parent / "static" / "frontend"


class ThrottledLoginView(auth_views.LoginView):
    """The login form, with failed attempts counted per client IP + username
    in Django's cache: past LOGIN_FAILURE_LIMIT failures within
    LOGIN_FAILURE_WINDOW_S seconds, POSTs answer 429 with a page that says
    in how many minutes the window ends.
    (The cache must be shared by all web processes for the limit to be exact.)"""

    def _key(self) -> str:
        ip = self.request.META.get("REMOTE_ADDR", "")
        username = (self.request.POST.get("username") or "").strip().lower()
        return "login-failures:" + hashlib.sha256(f"{ip}|{username}".encode()).hexdigest()

    def post(self, request, *args, **kwargs):
        key = self._key()
        if cache.get(key, 0) >= settings.LOGIN_FAILURE_LIMIT:
            # The window runs from the first failure counted in it (form_invalid).
            since = cache.get(key + ":since")
            window = settings.LOGIN_FAILURE_WINDOW_S
            left = window - (time.time() - since) if since else window
            left = max(1, math.ceil(left))
            answer = render(
                request, "frontend/login_locked.html",
                {"minutes": max(1, math.ceil(left / 60)), "window_minutes": max(1, window // 60),
                 "limit": settings.LOGIN_FAILURE_LIMIT},
                status=429,
            )
            answer["Retry-After"] = str(left)
            return answer
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        window = settings.LOGIN_FAILURE_WINDOW_S
        if cache.add(key, 0, timeout=window):
            cache.set(key + ":since", time.time(), timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            cache.set(key + ":since", time.time(), timeout=window)
        return super().form_invalid(form)


@login_required
def home(request):
    roles = user_roles(user=request.user)
    is_annotator = Role.ANNOTATOR in roles
    # A fixed number of queries however many campaigns (bench/console_pages.py:
    # one round and progress query per campaign made it the slowest page).
    rows = sorted(
        campaign_console_rows(campaigns=campaigns_visible_to(user=request.user)), key=lambda r: r["campaign"].pk
    )
    mine = (
        annotator_progress_by_campaign(annotator=request.user, campaign_ids=[r["campaign"].pk for r in rows])
        if is_annotator else {}
    )
    for row in rows:
        campaign = row["campaign"]
        row["mine"] = mine.get(campaign.pk)
        row["can_rate"] = is_annotator and campaign.status == campaign.Status.ACTIVE and row["progress"] is not None
    return render(
        request, "frontend/home.html", {"rows": rows, "roles": sorted(roles), "is_annotator": is_annotator}
    )


@login_required
def rate(request, campaign_id: int):
    """The rating page. Everything it shows comes from the annotator API
    (which never says which model wrote which side); the template only
    carries the campaign's name and instructions."""
    campaign = get_object_or_404(campaigns_visible_to(user=request.user), pk=campaign_id)
    if Role.ANNOTATOR not in user_roles(user=request.user):
        return render(request, "frontend/not_annotator.html", {"campaign": campaign}, status=403)
    config = {
        "campaign": campaign.pk,
        "name": campaign.name,
        "instructions": campaign.instructions,
        "user": request.user.username,
        "demonstrations": campaign.demonstrations,  # the better-answer editor: off, optional, both_bad
        "aspects": campaign.aspects,  # rubric aspects: [{name, question, key}] (rate_aspects.js)
        "aspects_required": campaign.aspects_required,
        # Sent with each rating: an admin may change the form while the page
        # is open, and the rating is then kept as made (services/rating_form.py).
        "form": rating_form_version(aspects=campaign.aspects, aspects_required=campaign.aspects_required,
                                    demonstrations=campaign.demonstrations),
    }
    return render(request, "frontend/rate.html", {"campaign": campaign, "config": config})


@require_safe
@gzip_page
def static_file(request, path: str):
    """The page's own static files, so that gunicorn (DEBUG off) serves them
    without a collectstatic step or another server. Vendored files carry their
    version in the name and are cached for good; the rest revalidate."""
    response = serve(request, path, document_root=STATIC_DIR)
    if path.startswith("vendor/"):
        patch_cache_control(response, public=True, max_age=365 * 24 * 3600, immutable=True)
    else:
        patch_cache_control(response, no_cache=True)
    return response
