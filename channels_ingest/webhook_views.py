"""Webhook endpoints for X (Account Activity API) and Facebook Pages.

CSRF-exempt and open to the platforms, so every POST is checked against the channel's secret
over the raw body before anything is stored: a bad or missing signature gets 403.
"""

import re

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from channels_ingest.connectors import facebook, x
from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import Platform
from channels_ingest.webhooks import webhook_receive

_CRC_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{1,128}")


def _channel(platform: str, channel_id: int) -> ChannelAccount:
    return get_object_or_404(ChannelAccount, pk=channel_id, platform=platform)


@csrf_exempt
@login_not_required
@require_http_methods(["GET", "POST"])
def x_webhook(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = _channel(Platform.X, channel_id)
    secret = str(channel.credentials.get("consumer_secret", ""))
    if not secret:
        return HttpResponseForbidden("This channel has no consumer secret.")
    if request.method == "GET":
        token = request.GET.get("crc_token", "")
        # The CRC answer is the same HMAC that signs bodies: answering for arbitrary text would
        # let anyone obtain a valid signature for a body of their choosing. X's tokens are
        # short base64 strings, which no JSON body can be.
        if not _CRC_TOKEN.fullmatch(token):
            return HttpResponseForbidden("crc_token is missing or malformed.")
        return JsonResponse({"response_token": x.crc_response_token(secret, token)})
    header = request.headers.get("x-twitter-webhooks-signature")
    if not x.signature_is_valid(secret, request.body, header):
        return HttpResponseForbidden("Bad signature.")
    webhook_receive(channel=channel, body=request.body)
    return HttpResponse(status=200)


@csrf_exempt
@login_not_required
@require_http_methods(["GET", "POST"])
def facebook_webhook(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = _channel(Platform.FACEBOOK, channel_id)
    if request.method == "GET":
        verify_token = str(channel.credentials.get("verify_token", ""))
        challenge = (
            facebook.handshake_challenge(verify_token, request.GET) if verify_token else None
        )
        if challenge is None:
            return HttpResponseForbidden("Verification failed.")
        return HttpResponse(challenge, content_type="text/plain")
    secret = str(channel.credentials.get("app_secret", ""))
    header = request.headers.get("x-hub-signature-256")
    if not secret or not facebook.signature_is_valid(secret, request.body, header):
        return HttpResponseForbidden("Bad signature.")
    webhook_receive(channel=channel, body=request.body)
    return HttpResponse("EVENT_RECEIVED", content_type="text/plain")
