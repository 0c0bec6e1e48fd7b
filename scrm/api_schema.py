"""The OpenAPI schema's generator: every operation documents the errors it may answer."""

from typing import Any, Literal

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from scrm.api import ErrorSerializer


class ApiSchema(AutoSchema):
    """Documents the error responses every operation may give, with their body."""

    def _get_response_bodies(
        self, direction: Literal["request", "response"] = "response"
    ) -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        codes = ["400", "401", "403", "429"]
        if "{" in self.path or self.method != "GET":
            codes.append("404")
        if self.method in ("POST", "PATCH", "PUT", "DELETE"):
            codes.append("409")
        for code in codes:
            responses.setdefault(code, self._get_response_for_code(ErrorSerializer, code))
        return responses


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Personal tokens in the schema: ``Authorization: Bearer scrm_...``."""

    target_class = "governance.api_tokens.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token, made on the API tokens page",
        }
