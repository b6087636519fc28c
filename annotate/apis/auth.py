"""The API token endpoint, throttled: a client gets settings'
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"] attempts (default 10 a
minute per IP) before 429, which bounds password guessing."""
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.throttling import ScopedRateThrottle

from annotate.apis.schema import TOO_MANY


class ThrottledObtainAuthToken(ObtainAuthToken):
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "login"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(help_text="send it as `Authorization: Token <token>`")

    @extend_schema(request=AuthTokenSerializer, responses={200: OutputSerializer, 429: TOO_MANY})
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


obtain_auth_token = ThrottledObtainAuthToken.as_view()
