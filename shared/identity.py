"""Identity normalisation and keyed hashing (SPEC §4).

Raw names and document numbers never leave intake: they are normalised here and turned into
HMAC-SHA256 keys with the programme's identity secret. Every other service works on those keys.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import date

# Characters that Unicode does not decompose into a base letter plus a combining mark.
_LETTER_MAP = str.maketrans({"đ": "d", "Đ": "d", "ð": "d", "Ð": "d", "ł": "l", "Ł": "l", "ø": "o", "Ø": "o"})
# Apostrophes join (O'Brien = OBrien); every other non-letter separates tokens.
_JOINERS = {"'", "’", "ʼ", "`", "´"}
# The same rules for a name written in ASCII alone (most names), in one table: joiners dropped,
# letters upper-cased, everything else a separator. NFKD leaves ASCII as it is.
_ASCII_NAME = str.maketrans(
    {
        chr(code): (None if chr(code) in _JOINERS else chr(code).upper() if chr(code).isalpha() else " ")
        for code in range(128)
    }
)


def normalise_document_number(id_number: str) -> str:
    """Document numbers compare after removing spaces and `-`, upper-cased."""
    return id_number.replace(" ", "").replace("-", "").upper()


def normalise_name(given_name: str, family_name: str | None = None) -> str:
    """NFKD, drop combining marks, đ→d, case-fold, letters only, tokens sorted.

    `normalise_name("Nguyễn Văn", "An") == normalise_name("AN", "NGUYEN VAN") == "AN NGUYEN VAN"`.
    """
    full = f"{given_name} {family_name or ''}"
    if full.isascii():
        return " ".join(sorted(full.translate(_ASCII_NAME).split()))
    return _normalise_any(full)


def _normalise_any(full: str) -> str:
    """The rules for any script; `normalise_name` takes a shortcut for ASCII with the same result."""
    decomposed = unicodedata.normalize("NFKD", full.translate(_LETTER_MAP))
    kept: list[str] = []
    for char in decomposed:
        if unicodedata.combining(char) or char in _JOINERS:
            continue
        kept.append(char if unicodedata.category(char).startswith("L") else " ")
    folded = "".join(kept).casefold().translate(_LETTER_MAP)
    return " ".join(sorted(token.upper() for token in folded.split()))


def deletion_neighbourhood(name: str) -> set[str]:
    """The name and each of its one-character deletions: two names one edit apart share one."""
    variants = {name}
    for index in range(len(name)):
        variants.add(name[:index] + name[index + 1 :])
    return variants


def age_on(date_of_birth: date, on: date) -> int:
    """Whole years completed on a given day."""
    years = on.year - date_of_birth.year
    if (on.month, on.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


# Near keys are compared only inside a block (same nationality and date of birth), among a few
# dozen rows at most: 64 bits of the keyed hash keep an accidental match out of reach and make
# each key a quarter of the size on the wire and on disk.
NEAR_KEY_HEX = 16
_NEAR_KEY_BYTES = NEAR_KEY_HEX // 2
_SHA256_BLOCK = 64
_IPAD = bytes(byte ^ 0x36 for byte in range(256))
_OPAD = bytes(byte ^ 0x5C for byte in range(256))


@dataclass(frozen=True)
class IdentityKeys:
    """What leaves intake about who a row is: keyed hashes only."""

    document_key: str | None
    name_key: str
    block_key: str  # nationality and date of birth: where near misses are looked for
    near_keys: tuple[str, ...]

    @property
    def partition_key(self) -> str:
        """Kafka key: the document key when there is one, so one person's rows stay ordered."""
        return self.document_key or self.name_key


class IdentityHasher:
    """HMAC-SHA256 with the identity secret (RFC 2104), built from two SHA-256 states.

    The key is padded once into the inner and outer states; each hash copies them (a SHA-256 copy
    costs a quarter of an `hmac` object's), and the near keys of a row share the inner state
    after their common prefix. The digests are `hmac.new(secret, message, sha256)`'s, bit for bit.
    """

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an identity secret is required")
        key = secret.encode()
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def _finish(self, inner: hashlib._Hash) -> hashlib._Hash:
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer

    def keyed_hash(self, purpose: str, *parts: str) -> str:
        inner = self._inner.copy()
        inner.update("\x1f".join((purpose, *parts)).encode())
        return self._finish(inner).hexdigest()

    def _near_keys(self, nationality: str, birth: str, name: str) -> tuple[str, ...]:
        """`keyed_hash("near", nationality, birth, variant)[:NEAR_KEY_HEX]` for each variant."""
        prefix = self._inner.copy()
        prefix.update(f"near\x1f{nationality}\x1f{birth}\x1f".encode())
        keys = []
        for variant in deletion_neighbourhood(name):
            inner = prefix.copy()
            inner.update(variant.encode())
            keys.append(self._finish(inner).digest()[:_NEAR_KEY_BYTES].hex())
        keys.sort()
        return tuple(keys)

    def keys_for(
        self,
        *,
        nationality: str,
        date_of_birth: date,
        given_name: str,
        family_name: str | None,
        id_type: str,
        id_number: str | None,
    ) -> IdentityKeys:
        name = normalise_name(given_name, family_name)
        birth = date_of_birth.isoformat()
        document_key = None
        if id_type != "none" and id_number:
            document_key = self.keyed_hash(
                "document", nationality, id_type, normalise_document_number(id_number)
            )
        near_keys = self._near_keys(nationality, birth, name)
        return IdentityKeys(
            document_key=document_key,
            name_key=self.keyed_hash("name", nationality, birth, name),
            block_key=self.keyed_hash("block", nationality, birth),
            near_keys=near_keys,
        )
