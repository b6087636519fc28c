from django.contrib.auth import views as auth_views
from django.urls import include, path

from frontend import views

urlpatterns = [
    # Failed logins are counted per IP + username: too many answer 429.
    path("login/", views.ThrottledLoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("campaigns/<int:campaign_id>/rate/", views.rate, name="rate"),
    path("console/", include("frontend.console.urls")),
    # Reached when nothing in front of Django serves /static/ (gunicorn, DEBUG off).
    path("static/frontend/<path:path>", views.static_file, name="frontend-static"),
    path("", views.home, name="home"),
]
