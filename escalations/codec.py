"""AES-256-GCM payload encryption: what Temporal stores of a run is ciphertext.

Invariant: every payload is encrypted with the newest configured key and names that key in
its (plaintext) metadata; it is decrypted with whichever configured key has that name. So a
new key can be added in front at any time, and runs whose history was written under older
keys keep replaying as long as those keys stay configured (docs/security.md, key rotation).

A payload that is not encrypted passes through ``decode`` unchanged: histories written before
encryption was turned on (and the replay tests' checked-in ones) stay readable. An encrypted
payload whose key is not configured is an error naming the key id, never garbage.

Layout of an encrypted payload: metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>``; data = 12-byte random nonce + ciphertext and tag of the original
payload (its own metadata included, serialized as protobuf); the key id is authenticated data.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from escalations.settings import KEY_BYTES, EncryptionKey

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class PayloadDecryptionError(ValueError):
    """An encrypted payload this process cannot decrypt; the message names the key id."""


class EncryptionCodec(PayloadCodec):
    """Encrypts with ``keys[0]``, decrypts with any of ``keys``; without keys, encodes nothing."""

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        self._newest = keys[0] if keys else None
        self._ciphers = {key.id: AESGCM(key.secret) for key in keys}

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_now(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_now(payloads)

    def encode_now(self, payloads: Iterable[Payload]) -> list[Payload]:
        if self._newest is None:
            return list(payloads)
        key_id = self._newest.id
        cipher = self._ciphers[key_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed))
        return encoded

    def decode_now(self, payloads: Iterable[Payload]) -> list[Payload]:
        return [self._decrypt(payload) if is_encrypted(payload) else payload for payload in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            held = ", ".join(self._ciphers) or "none"
            raise PayloadDecryptionError(
                f"a payload is encrypted with key {key_id!r}, which is not configured (keys held: {held}); "
                "set ESCALATION_ENCRYPTION_KEYS with every key still in use (docs/security.md)")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"a payload named key {key_id!r} but does not decrypt with it: altered, or a different key "
                "under the same id") from None
        return Payload.FromString(plain)


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def key_id_of(payload: Payload) -> str | None:
    """The id of the key a payload is encrypted with (None: not encrypted)."""
    return payload.metadata.get(KEY_ID, b"").decode(errors="replace") if is_encrypted(payload) else None


def new_key_entry(prefix: str = "k") -> str:
    """A fresh ``id:base64`` entry for ``ESCALATION_ENCRYPTION_KEYS``: 32 random bytes, an id
    saying when it was made (``k20261201-3fa2``), so the newest is easy to tell."""
    key_id = f"{prefix}{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


def format_keys(keys: Sequence[EncryptionKey]) -> str:
    """``keys`` as ``ESCALATION_ENCRYPTION_KEYS`` holds them (newest first)."""
    return ",".join(f"{key.id}:{base64.b64encode(key.secret).decode('ascii')}" for key in keys)


PLAIN = ""
"""The key id :func:`key_ids_in` counts unencrypted payloads under."""
# Never passed through the codec: the server indexes search attributes, and headers carry
# interceptors' context (tracing), not data.
_NOT_ENCODED = {"temporal.api.common.v1.SearchAttributes", "temporal.api.common.v1.Header"}
# The SDK core writes a patch marker's details (the patch id) itself, past the codec.
_MARKER = "temporal.api.history.v1.MarkerRecordedEventAttributes"
_PATCH_MARKER = "core_patch"


def key_ids_in(message: Message) -> Counter[str]:
    """How many payloads anywhere in ``message`` (a history event, a schedule) each key
    encrypts; unencrypted ones count under ``PLAIN``. Reads metadata only, decrypts nothing.
    Payloads the codec never sees are not counted: search attributes, headers and the SDK's
    patch markers (``workflow.patched`` ids)."""
    found: Counter[str] = Counter()

    def visit(node: Message) -> None:
        if node.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
            found[key_id_of(node) or PLAIN] += 1  # type: ignore[arg-type]
            return
        if node.DESCRIPTOR.full_name in _NOT_ENCODED:
            return
        if node.DESCRIPTOR.full_name == _MARKER and node.marker_name == _PATCH_MARKER:  # type: ignore[attr-defined]
            return
        for descriptor, value in node.ListFields():
            if descriptor.message_type is None:
                continue
            if descriptor.message_type.GetOptions().map_entry:
                values = value.values()
                if descriptor.message_type.fields_by_name["value"].message_type is None:
                    continue
            elif _repeated(descriptor):
                values = value
            else:
                values = [value]
            for item in values:
                visit(item)

    visit(message)
    return found


def _repeated(descriptor: FieldDescriptor) -> bool:
    # protobuf 6+ has ``is_repeated`` (7 dropped ``label``); older versions only ``label``.
    if hasattr(descriptor, "is_repeated"):
        return bool(descriptor.is_repeated)
    return descriptor.label == descriptor.LABEL_REPEATED  # type: ignore[attr-defined]
