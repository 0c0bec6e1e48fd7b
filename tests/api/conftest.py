"""API clients for each persona: by session (the browser's way) and by personal token."""

import pytest
from rest_framework.test import APIClient

from governance.api_tokens import api_token_create


@pytest.fixture
def api(world):
    """``api(persona)``: a client acting as that persona through a personal token, or
    unauthenticated for "anonymous"."""

    def client_for(name: str) -> APIClient:
        client = APIClient()
        user = world.persona(name)
        if user is not None:
            _, key = api_token_create(user=user, name=f"{name} script")
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    return client_for


@pytest.fixture
def session_api(world):
    def client_for(name: str) -> APIClient:
        client = APIClient(enforce_csrf_checks=True)
        user = world.persona(name)
        if user is not None:
            client.force_login(user)
        return client

    return client_for
