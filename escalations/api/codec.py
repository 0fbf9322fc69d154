"""Temporal's remote codec endpoints: ``POST /codec/encode`` and ``POST /codec/decode``.

The protocol the Temporal UI (``--ui-codec-endpoint``, or its *Codec Server* setting) and the
``temporal`` CLI (``--codec-endpoint … --codec-auth "Bearer …"``) speak: a JSON ``Payloads``
message, ``{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}``, in
and out. Decode turns the API's encrypted payloads back into the pydantic JSON they hold (a
plain payload comes back unchanged); encode does the reverse, so the UI can start or signal a
run with encrypted input. Both need a bearer token with scope `read`.

Browsers: the UI calls these from its own origin, so ``ESCALATION_CODEC_UI_ORIGINS`` get CORS
on ``/codec/*`` (and only there). A UI without sign-in (the dev stack's) cannot send a token
— it passes an access token only when users sign in with OIDC over HTTPS — so
``ESCALATION_CODEC_UI_TOKEN`` names the (read-only) API token its requests stand for: a ``/codec`` request
from a listed origin without an ``Authorization`` header is checked as if it carried that
token. Only for a UI that whoever reaches it may use anyway: a browser cannot fake its origin,
but any other program on the network can (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from escalations.api.deps import READ
from escalations.api.problems import ProblemError
from escalations.api.responses import problems
from escalations.codec import EncryptionCodec, PayloadDecryptionError
from escalations.settings import ApiSettings, CodecSettings, ConfigError, token_digest

PREFIX = "/codec"
CORS_HEADERS = ["authorization", "content-type", "x-namespace"]


class CodecPayload(BaseModel):
    """``temporal.api.common.v1.Payload`` as protobuf JSON: bytes in base64."""

    metadata: dict[str, str] = Field(default_factory=dict, description="name -> base64 value")
    data: str = Field("", description="base64")


class CodecPayloads(BaseModel):
    """``temporal.api.common.v1.Payloads`` as protobuf JSON."""

    payloads: list[CodecPayload] = Field(default_factory=list)


router = APIRouter(prefix=PREFIX, tags=["codec"])


async def _codec(request: Request) -> EncryptionCodec:
    return request.app.state.codec


@router.post("/encode", response_model=CodecPayloads, summary="Encrypt payloads (remote codec)",
             operation_id="encodePayloads",
             dependencies=[Depends(READ)], responses=problems(400, 401, 403, 413, 422))
async def encode(body: CodecPayloads, codec: EncryptionCodec = Depends(_codec)) -> CodecPayloads:
    """Each payload encrypted with the API's newest key (unchanged without keys)."""
    return _to_json(codec.encode_now(_from_json(body.payloads)))


@router.post("/decode", response_model=CodecPayloads, summary="Decrypt payloads (remote codec)",
             operation_id="decodePayloads",
             dependencies=[Depends(READ)], responses=problems(400, 401, 403, 413, 422))
async def decode(body: CodecPayloads, codec: EncryptionCodec = Depends(_codec)) -> CodecPayloads:
    """Each encrypted payload decrypted with the key its metadata names; a plain one unchanged.
    422 names the payload and the key id when a key is not configured."""
    decoded = []
    for number, payload in enumerate(_from_json(body.payloads)):
        try:
            decoded.extend(codec.decode_now([payload]))
        except PayloadDecryptionError as err:
            raise ProblemError(422, f"payload {number}: {err}", slug="payload-not-decodable",
                               errors=[{"loc": ["body", "payloads", number], "msg": str(err),
                                        "type": "payload_not_decodable"}]) from None
    return _to_json(decoded)


def _bytes(value: str, loc: list[str | int]) -> bytes:
    # Protobuf JSON writes standard base64; its parsers also take the URL-safe alphabet and no padding.
    standard = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        raise ProblemError(422, f"{'.'.join(map(str, loc))} is not base64", slug="invalid-base64",
                           errors=[{"loc": ["body", *loc], "msg": "not base64", "type": "invalid_base64"}]) from None


def _from_json(payloads: Sequence[CodecPayload]) -> list[Payload]:
    return [
        Payload(metadata={name: _bytes(value, ["payloads", n, "metadata", name])
                          for name, value in payload.metadata.items()},
                data=_bytes(payload.data, ["payloads", n, "data"]))
        for n, payload in enumerate(payloads)
    ]


def _to_json(payloads: Sequence[Payload]) -> CodecPayloads:
    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    return CodecPayloads(payloads=[
        CodecPayload(metadata={name: b64(value) for name, value in payload.metadata.items()}, data=b64(payload.data))
        for payload in payloads
    ])


class BrowserAccess:
    """CORS for the UI's origins on ``/codec/*`` only, and the UI's stand-in token (see above)."""

    def __init__(self, app: ASGIApp, codec: CodecSettings) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=list(codec.ui_origins), allow_methods=["POST"],
                                   allow_headers=CORS_HEADERS, max_age=600)
        self.origins = {origin.encode() for origin in codec.ui_origins}
        self.stand_in = (f"Bearer {codec.ui_token.get_secret_value()}".encode()
                         if codec.ui_token is not None else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if (self.stand_in is not None and scope["method"] == "POST" and b"authorization" not in headers
                and headers.get(b"origin") in self.origins):
            scope = {**scope, "headers": [*scope["headers"], (b"authorization", self.stand_in)]}
        await self.cors(scope, receive, send)


def install_browser_access(app: FastAPI, settings: ApiSettings) -> None:
    """The routes' codec, and (with UI origins configured) their browser access; ``router`` is
    included with the others."""
    codec = settings.codec
    if codec.ui_token is not None:
        digest = token_digest(codec.ui_token.get_secret_value())
        held = [token for token in settings.api_tokens if token.sha256 == digest]
        if not held:
            raise ConfigError("ESCALATION_CODEC_UI_TOKEN must be one of ESCALATION_API_TOKENS")
        if any(token.scopes != frozenset({"read"}) for token in held):
            # The UI's requests carry it without the operator presenting anything: it must not act.
            raise ConfigError("ESCALATION_CODEC_UI_TOKEN must be a token with scope read only")
    app.state.codec = EncryptionCodec(codec.keys)
    if codec.ui_origins:
        app.add_middleware(BrowserAccess, codec=codec)
