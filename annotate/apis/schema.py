from drf_spectacular.openapi import AutoSchema


class RatchetAutoSchema(AutoSchema):
    """Names nested Input/OutputSerializers after their view (RatingCreateApi's
    OutputSerializer -> RatingCreateOutput), so the components don't collide."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        outer = type(serializer).__qualname__.split(".")
        if len(outer) > 1:
            name = outer[0].removesuffix("Api") + name
        return name
