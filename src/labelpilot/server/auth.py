"""Basic auth for the Label Studio routes, and how webhooks are let in.

Label Studio sends basic auth on /health, /setup, /predict, /versions and the START_TRAINING webhook
when it is configured in the model settings, but its webhook engine (annotation events) sends none.
So /webhook is let in when any of these holds:
  1. valid basic auth (or no basic auth configured);
  2. it came through the secret prefix ``/s/<LABELPILOT_WEBHOOK_SECRET>/webhook``;
  3. it is an annotation event for a project that was set up with valid credentials at /setup.
START_TRAINING (which can start work) always needs 1 or 2.
"""

from __future__ import annotations

import base64
import hmac

from fastapi import HTTPException, Request

from labelpilot.config import Settings
from labelpilot.server.deps import ServicesDep

CHALLENGE = {"WWW-Authenticate": 'Basic realm="Login required"'}


def basic_ok(request: Request, settings: Settings) -> bool:
    creds = settings.basic_auth
    if creds is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), creds[0].encode())
    ok_pass = hmac.compare_digest(password.encode(), creds[1].encode())
    return ok_user and ok_pass


def secret_ok(request: Request, settings: Settings) -> bool:
    given = request.path_params.get("secret")
    return bool(settings.webhook_secret and given and hmac.compare_digest(given, settings.webhook_secret))


async def require_basic(request: Request, state: ServicesDep) -> None:
    settings = state.settings
    if "secret" in request.path_params and not secret_ok(request, settings):
        raise HTTPException(status_code=404, detail="Not Found")
    if not basic_ok(request, settings):
        raise HTTPException(status_code=401, detail="Unauthorized", headers=CHALLENGE)


async def require_secret_path(request: Request, state: ServicesDep) -> None:
    settings = state.settings
    if "secret" in request.path_params and not secret_ok(request, settings):
        raise HTTPException(status_code=404, detail="Not Found")
