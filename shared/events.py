"""Versioned event models: the only shapes that cross a Kafka topic.

Every event carries `event_id`, `event_type`, `schema_version` and `occurred_at`. Changing an
event's fields bumps its version; `UPCASTERS` turns an old version into the newest when read, so
handlers only ever see one shape. `parse_event` is the single door in: anything it refuses goes to
the dead-letter topic with the reason.

The models are the schema; msgspec is their codec on the hot paths, where it pays. Bytes in the
newest envelope are checked by a msgspec struct derived from the model (same fields, types and
constraints), then become the model without being checked twice; an event's bytes are its fields
written by msgspec. Measured on a payment status in one process against pydantic's own JSON
methods: decode 5.0 -> 2.9 µs, encode 1.8 -> 1.4 µs; at 60,000 persons the services used 6 % less
CPU. The struct is stricter than pydantic's lax JSON mode in one respect (it refuses a number
written as text): such a message takes the general path and is read as it always was.
"""

from __future__ import annotations

import os
import random
import types
import typing
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Sex = Literal["F", "M", "X"]
Assistance = Literal["cash_relief", "food_kit", "hygiene_kit", "remediation", "safe_migration_info"]
PayoutMethod = Literal["bank_transfer", "e_wallet", "cash_pickup"]
Decision = Literal["eligible", "ineligible", "duplicate"]
PaymentStatus = Literal["pending_approval", "pending", "sent", "paid", "failed", "reversed"]

MAX_EVENT_BYTES = 256 * 1024


# Event ids come from a generator of their own, seeded from the operating system and again in a
# forked child: nobody seeding the `random` module (a test library, a dependency) can make two
# processes draw the same ids.
_ids = random.Random()  # noqa: S311 - ids must be unique, not secret
os.register_at_fork(after_in_child=_ids.seed)


# A version 4 UUID as an integer: 122 random bits, the version (4) and the RFC 4122 variant.
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_VERSION_4 = (0x4 << 76) | (0x2 << 62)


def new_event_id() -> str:
    """A random (version 4) UUID in its usual text form. Unlike `uuid.uuid4()` this makes no
    system call, so the event loop never gives up the GIL to the database threads for an id
    (measured: a quarter of a busy relay's loop time); formatted directly, not through a `UUID`
    object (4.8 -> 2.0 µs)."""
    h = "%032x" % (_ids.getrandbits(128) & _RANDOM_BITS | _VERSION_4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    occurred_at: datetime = Field(default_factory=utc_now)

    def envelope(self) -> dict[str, Any]:
        body = self.model_dump(mode="json")
        return {"event_type": self.event_type, "schema_version": self.schema_version, **body}

    def to_bytes(self) -> bytes:
        """The envelope as JSON: `orjson.dumps(self.envelope())`, byte for byte, written by msgspec
        from the model's fields (every value is text, a number, a list of text, a date or a time,
        which it writes as pydantic does; 1.8 -> 1.4 µs against pydantic's serializer)."""
        head = b'{"event_type":"%s","schema_version":%d,' % (self.event_type.encode(), self.schema_version)
        return head + _encoder.encode(self.__dict__)[1:]


class BeneficiaryRegistered(Event):
    """An accepted batch row, as eligibility needs it: keyed hashes, no raw personal data.

    Version 2 added `block_key` (nationality and date of birth) and cut near keys to 16 hex
    digits: eligibility looks for near misses among the rows of the same block. A version 1 row
    has no block (`None`) and is not compared for near misses.
    """

    event_type: ClassVar[str] = "beneficiary.registered"
    schema_version: ClassVar[int] = 2

    row_id: str
    batch_id: str
    partner_id: str
    partner_name: str
    document_key: str | None
    name_key: str
    block_key: str | None = Field(min_length=1, max_length=64)
    near_keys: list[str] = Field(max_length=512)
    sex: Sex
    age_years: int = Field(ge=0, le=120)
    nationality: str = Field(pattern=r"^[A-Z]{3}$")
    country: str = Field(pattern=r"^[A-Z]{2}$")
    household_size: int = Field(ge=1, le=30)
    vulnerabilities: list[str]
    assistance: Assistance
    payout_method: PayoutMethod | None
    payout_account_sealed: str | None
    registered_on: date


class EligibilityDecided(Event):
    """The decision on one row, with every reason, the policy version and the resolved person."""

    event_type: ClassVar[str] = "eligibility.decided"
    schema_version: ClassVar[int] = 1

    row_id: str
    batch_id: str
    partner_id: str
    partner_name: str
    person_id: str
    decision: Decision
    reasons: list[str]
    policy_version: str
    cycle: str
    assistance: Assistance
    country: str
    sex: Sex
    age_years: int
    household_size: int
    registered_on: date
    amount_minor: int | None = None
    currency: str | None = None
    payout_method: PayoutMethod | None = None
    payout_account_sealed: str | None = None
    duplicate_of: str | None = None  # row_id of the approval this row duplicates


class PersonsMerged(Event):
    """Two person ids turned out to be one person; `merged_person_id` now means `survivor_person_id`."""

    event_type: ClassVar[str] = "persons.merged"
    schema_version: ClassVar[int] = 1

    survivor_person_id: str
    merged_person_id: str
    cause: Literal["identity_rule", "review"]
    review_id: str | None = None


class PaymentStatusChanged(Event):
    """One ledger entry of a payment. `sequence` grows per payment, so consumers keep the newest."""

    event_type: ClassVar[str] = "payment.status_changed"
    schema_version: ClassVar[int] = 1

    payment_ref: str
    person_id: str
    row_id: str
    batch_id: str
    partner_id: str
    cycle: str
    country: str
    amount_minor: int
    currency: str
    status: PaymentStatus
    sequence: int = Field(ge=1)
    reason: str | None = None


class OverpaymentDetected(Event):
    """A merge found a person paid twice in one cycle: the later payment is to be recovered."""

    event_type: ClassVar[str] = "payment.overpayment_detected"
    schema_version: ClassVar[int] = 1

    payment_ref: str
    kept_payment_ref: str
    person_id: str
    cycle: str
    amount_minor: int
    currency: str


class DeadLettered(Event):
    """A message a consumer could not handle, with the reason; the partition kept flowing."""

    event_type: ClassVar[str] = "dead_lettered"
    schema_version: ClassVar[int] = 1

    source_topic: str
    partition: int
    offset: int
    consumer_group: str
    reason: str
    key: str | None
    payload: str  # the original bytes, decoded with replacement and cut to a bounded size


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        BeneficiaryRegistered,
        EligibilityDecided,
        PersonsMerged,
        PaymentStatusChanged,
        OverpaymentDetected,
        DeadLettered,
    )
}


def _registered_v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    """A version 1 row carries no block: its date of birth never left intake, so none can be made."""
    return {**body, "block_key": None}


# (event_type, old version) → function turning that version's body into the next version's.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("beneficiary.registered", 1): _registered_v1_to_v2,
}


def _head(cls: type[Event]) -> bytes:
    """How `Event.to_bytes` begins for the newest version of an event type."""
    return b'{"event_type":"%s","schema_version":%d,' % (cls.event_type.encode(), cls.schema_version)


# The opening of every newest-version envelope `to_bytes` writes → its event class.
_HEADS: dict[bytes, type[Event]] = {_head(cls): cls for cls in EVENT_TYPES.values()}
_VERSION_FIELD = b'"schema_version":'
_encoder = msgspec.json.Encoder()
_CONSTRAINTS = ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern")


def _wire_type(cls: type[Event], name: str) -> Any:
    """The field's type for msgspec, its pydantic constraints as a `msgspec.Meta` (on the value
    inside an optional one, where pydantic applies them)."""
    info = cls.model_fields[name]
    constraints: dict[str, Any] = {}
    for item in info.metadata:
        found = {key: getattr(item, key) for key in _CONSTRAINTS if getattr(item, key, None) is not None}
        if not found:
            raise TypeError(f"{cls.__name__}.{name}: no msgspec equivalent for {item!r}")
        constraints.update(found)
    pattern = constraints.get("pattern")
    if pattern is not None and pattern.endswith("$") and not pattern.endswith("\\$"):
        # Python's `$` (msgspec's regex) also matches before a final newline; pydantic's does not.
        constraints["pattern"] = pattern[:-1] + "\\Z"
    annotation = info.annotation
    if not constraints:
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{cls.__name__}.{name}: constraints on a union of {inner}")
        return Annotated[inner[0], msgspec.Meta(**constraints)] | None
    return Annotated[annotation, msgspec.Meta(**constraints)]


def _wire_struct(cls: type[Event]) -> type[msgspec.Struct]:
    """A msgspec struct with the model's fields, types, constraints and defaults."""
    fields: list[Any] = []
    for name, info in cls.model_fields.items():
        wire = _wire_type(cls, name)
        if info.default_factory is not None:
            fields.append((name, wire, msgspec.field(default_factory=info.default_factory)))  # type: ignore[arg-type]
        elif info.is_required():
            fields.append((name, wire))
        else:
            fields.append((name, wire, info.default))
    return msgspec.defstruct(f"{cls.__name__}Wire", fields, kw_only=True, forbid_unknown_fields=True)


_set = object.__setattr__


def _decoder(cls: type[Event]) -> Callable[[bytes], Event]:
    """Bytes → the model, checked once by the struct; then built as `model_construct` builds one
    (every field set), without pydantic checking the values again."""
    decode = msgspec.json.Decoder(_wire_struct(cls)).decode
    every_field = frozenset(cls.model_fields)

    def decode_into_model(raw: bytes) -> Event:
        values = msgspec.structs.asdict(decode(raw))
        model = cls.__new__(cls)
        _set(model, "__dict__", values)
        _set(model, "__pydantic_fields_set__", set(every_field))
        _set(model, "__pydantic_extra__", None)
        _set(model, "__pydantic_private__", None)
        return model

    return decode_into_model


_DECODERS: dict[type[Event], Callable[[bytes], Event]] = {cls: _decoder(cls) for cls in EVENT_TYPES.values()}


class PoisonMessage(ValueError):
    """A message that can never be handled; the text is the dead-letter reason."""


def parse_event(
    raw: bytes | str | dict[str, Any], *, allowed: tuple[type[Event], ...] | None = None
) -> Event:
    """Decode, upcast and validate one event; raise PoisonMessage with a reason otherwise.

    Bytes that open as `Event.to_bytes` writes the newest version of an allowed type are
    decoded straight from JSON by msgspec; anything else, or anything that fails there, takes
    the general path below, where pydantic checks the values and gives the reason.
    """
    if isinstance(raw, (bytes, str)) and len(raw) > MAX_EVENT_BYTES:
        raise PoisonMessage(f"message of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    if isinstance(raw, bytes):
        version_at = raw.find(_VERSION_FIELD, 0, 80)
        if version_at > 0:
            cut = raw.find(b",", version_at) + 1
            known = _HEADS.get(raw[:cut])
            if known is not None and (allowed is None or known in allowed):
                try:
                    return _DECODERS[known](b"{" + raw[cut:])
                except msgspec.DecodeError:
                    pass
    if isinstance(raw, dict):
        body = dict(raw)
    else:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise PoisonMessage(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise PoisonMessage("not a JSON object")
    event_type = body.pop("event_type", None)
    version = body.pop("schema_version", None)
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise PoisonMessage(f"unknown event_type {event_type!r}")
    if allowed is not None and cls not in allowed:
        raise PoisonMessage(f"event_type {event_type!r} does not belong on this topic")
    if not isinstance(version, int) or version < 1 or version > cls.schema_version:
        raise PoisonMessage(f"unsupported schema_version {version!r} for {event_type}")
    while version < cls.schema_version:
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise PoisonMessage(f"no upcaster from {event_type} v{version}")
        body = upcast(body)
        version += 1
    try:
        return cls.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PoisonMessage(f"invalid {event_type}: {where}: {first['msg']}") from None
