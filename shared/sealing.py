"""Sealed payout accounts: the account travels to disbursement encrypted, never in the clear.

AES-256-GCM with a key derived (HKDF-SHA256) from the identity secret for this purpose only, so
a topic that reporting reads carries ciphertext, and nothing in the topic links two rows.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealError(ValueError):
    pass


class Sealer:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"relief payout account v1").derive(
            secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(
            nonce + self._aead.encrypt(nonce, plaintext.encode(), b"payout")
        ).decode()

    def open(self, token: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            return self._aead.decrypt(raw[:12], raw[12:], b"payout").decode()
        except Exception:
            raise SealError("a sealed payout account could not be opened (wrong identity secret?)") from None
