"""The API token endpoint, throttled: a client gets settings'
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"] attempts (default 10 a
minute per IP) before 429, which bounds password guessing."""
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle


class ThrottledObtainAuthToken(ObtainAuthToken):
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "login"


obtain_auth_token = ThrottledObtainAuthToken.as_view()
