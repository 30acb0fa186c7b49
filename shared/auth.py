"""API keys: `rk_<partner_id>_<secret>`; only a salted hash of the secret is ever stored.

Intake owns the partner table and checks keys itself; the other services ask intake's
`GET /v1/whoami` (cached briefly) so no service reads another's tables.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import httpx

Role = Literal["partner", "finance"]
KEY_PREFIX = "rk_"


@dataclass(frozen=True)
class Principal:
    partner_id: str
    name: str
    role: Role


class AuthError(Exception):
    """401 when the key is missing, unknown or revoked; 403 when the role does not fit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_partner_id() -> str:
    return f"p{secrets.token_hex(4)}"


def new_api_key(partner_id: str) -> str:
    return f"{KEY_PREFIX}{partner_id}_{secrets.token_urlsafe(24)}"


def split_api_key(api_key: str) -> tuple[str, str] | None:
    if not api_key.startswith(KEY_PREFIX):
        return None
    partner_id, sep, secret = api_key[len(KEY_PREFIX) :].partition("_")
    if not sep or not partner_id or not secret:
        return None
    return partner_id, secret


def hash_secret(secret: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt.encode(), 10_000).hex()


def new_salt() -> str:
    return secrets.token_hex(16)


def secret_matches(secret: str, salt: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, salt), expected_hash)


def bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthError(401, "missing API key: send the header `Authorization: Bearer <key>`")
    return authorization[7:].strip()


class RemoteAuthenticator:
    """Checks keys with intake's `/v1/whoami`, caching answers for a short time."""

    def __init__(self, intake_url: str, ttl_seconds: float = 30.0) -> None:
        self.intake_url = intake_url.rstrip("/")
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None, *, role: Role | None = None) -> Principal:
        token = bearer_token(authorization)
        cached = self._cache.get(token)
        if cached and cached[0] > time.monotonic():
            principal = cached[1]
        else:
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(
                        f"{self.intake_url}/v1/whoami", headers={"Authorization": f"Bearer {token}"}
                    )
            except httpx.HTTPError:
                raise AuthError(503, "cannot check the API key: the intake service is unreachable") from None
            if response.status_code != 200:
                raise AuthError(401, "unknown or revoked API key")
            body = response.json()
            principal = Principal(body["partner_id"], body["name"], body["role"])
            self._cache[token] = (time.monotonic() + self.ttl, principal)
        if role is not None and principal.role != role:
            raise AuthError(403, f"this action needs a {role} key")
        return principal
