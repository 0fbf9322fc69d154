"""The payload codec, its settings and the API's codec endpoints, without a server.

Keys: ``id:base64`` entries, newest first; encrypt with the newest, decrypt with any; errors
name the variable and the entry, never the key material. The converter moves failure
messages into encrypted attributes. The endpoints speak Temporal's remote codec protocol,
need the bearer token, and let only the configured UI origin in (CORS, and its stand-in token).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner

from escalations.api.app import create_app
from escalations.codec import (
    ENCODING,
    EncryptionCodec,
    PayloadDecryptionError,
    format_keys,
    key_id_of,
    new_key_entry,
)
from escalations.connect import StackInfo, resolve, write_stack
from escalations.devstack.dev import stack_codec, stack_secrets
from escalations.settings import ApiSettings, CodecSettings, ConfigError, parse_encryption_keys, token_entry
from escalations.temporal import data_converter
from tests.helpers.codec import OTHER_KEY, TEST_KEYS, codec_of

SECRET_A = base64.b64encode(b"a" * 32).decode()
SECRET_B = base64.b64encode(b"b" * 32).decode()


def json_payload(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


# -- the codec ---------------------------------------------------------------------------


async def test_encrypts_with_the_newest_key_and_decrypts_with_any():
    old = EncryptionCodec(parse_encryption_keys(f"k1:{SECRET_A}", "X"))
    rotated = EncryptionCodec(parse_encryption_keys(f"k2:{SECRET_B}, k1:{SECRET_A}", "X"))
    original = json_payload({"customer": "Acme Corp"})

    [under_k1] = await old.encode([original])
    [under_k2] = await rotated.encode([original])
    assert (key_id_of(under_k1), key_id_of(under_k2)) == ("k1", "k2")
    assert under_k2.metadata["encoding"] == ENCODING and b"Acme" not in under_k2.data
    assert under_k2.data != (await rotated.encode([original]))[0].data  # a fresh nonce each time
    assert await rotated.decode([under_k1, under_k2]) == [original, original]
    with pytest.raises(PayloadDecryptionError, match=r"key 'k2', which is not configured \(keys held: k1\)"):
        await old.decode([under_k2])


async def test_plain_payloads_pass_and_altered_ones_fail():
    codec = EncryptionCodec(parse_encryption_keys(f"k1:{SECRET_A}", "X"))
    plain = json_payload("written before encryption was on")
    assert await codec.decode([plain]) == [plain]
    [sealed] = await codec.encode([plain])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptionError, match="does not decrypt"):
        await codec.decode([altered])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata["encryption-key-id"] = b"k1"
    other = EncryptionCodec(parse_encryption_keys(f"k1:{SECRET_B}", "X"))  # same id, another key
    with pytest.raises(PayloadDecryptionError, match="different key under the same id"):
        await other.decode([relabelled])


async def test_without_keys_nothing_is_encrypted_and_an_encrypted_payload_names_its_key():
    converter = data_converter(CodecSettings.of())
    [payload] = await converter.encode([{"customer": "Acme Corp"}])
    assert payload.metadata["encoding"] == b"json/plain" and b"Acme Corp" in payload.data
    [sealed] = await data_converter(codec_of(TEST_KEYS)).encode([{"customer": "Acme Corp"}])
    with pytest.raises(PayloadDecryptionError, match="'test-1', which is not configured \\(keys held: none\\)"):
        await converter.decode([sealed])


async def test_failure_messages_and_stack_traces_are_encrypted_too():
    converter = data_converter(codec_of(TEST_KEYS))
    failure = Failure()
    try:
        raise ApplicationError("cannot reach jane.doe@acme.example", type="Unreachable")
    except ApplicationError as err:
        await converter.encode_failure(err, failure)
    assert "jane" not in failure.message and "jane" not in failure.stack_trace
    assert key_id_of(failure.encoded_attributes) == "test-1"
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "cannot reach jane.doe@acme.example"
    plain = Failure()
    await data_converter(CodecSettings.of()).encode_failure(ApplicationError("visible"), plain)
    assert plain.message == "visible"  # without keys, as before


# -- settings ----------------------------------------------------------------------------


def test_keys_come_from_the_variable_or_a_file(tmp_path: Path):
    settings = CodecSettings.from_env({"ESCALATION_ENCRYPTION_KEYS": f" k2:{SECRET_B} ,k1:{SECRET_A}"})
    assert [key.id for key in settings.keys] == ["k2", "k1"] and settings.encrypted
    assert settings.keys[1].secret == b"a" * 32
    assert "aaaa" not in repr(settings) and SECRET_A not in repr(settings)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# rotated 2026-12-01\nk2:{SECRET_B}\nk1:{SECRET_A.rstrip('=')}  # URL-safe, unpadded\n")
    from_file = CodecSettings.from_env({"ESCALATION_ENCRYPTION_KEYS_FILE": str(keys_file)})
    assert [key.secret for key in from_file.keys] == [key.secret for key in settings.keys]
    assert not CodecSettings.from_env({}).encrypted
    assert format_keys(settings.keys) == f"k2:{SECRET_B},k1:{SECRET_A}"
    assert parse_encryption_keys(new_key_entry(), "X")[0].id.startswith("k")


@pytest.mark.parametrize(("value", "message"), [
    ("k1", "ESCALATION_ENCRYPTION_KEYS: entry 1 is not `id:base64-key`"),
    (f"k1:{SECRET_A},k 2:{SECRET_B}", "entry 2: key id 'k 2' must be 1-64 letters"),
    (f"k1:{SECRET_A},k1:{SECRET_B}", "entry 2: key id 'k1' appears twice"),
    (f"k1:{SECRET_A[:-8]}", "entry 1 (k1): the key is 27 bytes; AES-256 needs 32"),
    ("k1:not*base64", "entry 1 (k1): the key is not valid base64"),
    (" , ", "ESCALATION_ENCRYPTION_KEYS holds no key"),
])
def test_a_bad_key_is_named_without_its_material(value: str, message: str):
    with pytest.raises(ConfigError) as bad:
        CodecSettings.from_env({"ESCALATION_ENCRYPTION_KEYS": value})
    assert message in str(bad.value)
    assert SECRET_A[:20] not in str(bad.value) and SECRET_B[:20] not in str(bad.value)


def test_other_bad_codec_settings_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="ESCALATION_ENCRYPTION_KEYS_FILE: cannot read .*missing"):
        CodecSettings.from_env({"ESCALATION_ENCRYPTION_KEYS_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="not both"):
        CodecSettings.from_env({"ESCALATION_ENCRYPTION_KEYS": f"k1:{SECRET_A}",
                                "ESCALATION_ENCRYPTION_KEYS_FILE": str(tmp_path / "keys")})
    with pytest.raises(ConfigError, match="ESCALATION_CODEC_UI_ORIGINS: .*'http://ui:8233/app' is not an origin"):
        CodecSettings.from_env({"ESCALATION_CODEC_UI_ORIGINS": "http://ui:8233/app"})
    with pytest.raises(ConfigError, match="ESCALATION_CODEC_UI_TOKEN needs ESCALATION_CODEC_UI_ORIGINS"):
        CodecSettings.from_env({"ESCALATION_CODEC_UI_TOKEN": "t"})
    origins = CodecSettings.from_env({"ESCALATION_CODEC_UI_ORIGINS": "http://localhost:8233/, https://ui.example"})
    assert origins.ui_origins == ("http://localhost:8233", "https://ui.example")


def test_processes_find_the_keys_in_the_environment_or_stack_json(tmp_path: Path):
    write_stack(tmp_path, StackInfo(temporal_address="127.0.0.1:7233", database_url="postgresql://x/y",
                                    encryption_keys=TEST_KEYS))
    assert [key.id for key in resolve(tmp_path, environ={}).codec.keys] == ["test-1"]
    assert [key.id for key in resolve(tmp_path, environ={"ESCALATION_ENCRYPTION_KEYS": OTHER_KEY}).codec.keys] == [
        "test-2"]
    assert not resolve(tmp_path / "no-stack", environ={}).codec.encrypted
    api = ApiSettings.from_env({"ESCALATION_ENCRYPTION_KEYS": TEST_KEYS})
    assert [key.id for key in api.codec.keys] == ["test-1"]
    assert [key.id for key in api.with_overrides(port=1).codec.keys] == ["test-1"]


def test_the_dev_stack_generates_one_key_and_keeps_it(tmp_path: Path):
    first = stack_secrets(tmp_path, {})
    assert first == stack_secrets(tmp_path, {})  # kept in secrets.json, not made again
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    [key] = parse_encryption_keys(first["encryption_keys"], "X")
    assert key.id.startswith("dev")
    configured = stack_secrets(tmp_path, {"ESCALATION_ENCRYPTION_KEYS": f"{OTHER_KEY},{TEST_KEYS}"})
    assert configured["encryption_keys"] == f"{OTHER_KEY},{TEST_KEYS}"
    codec = stack_codec(first, "http://127.0.0.1:8233", first["api_read_token"])
    assert codec.ui_origins == ("http://127.0.0.1:8233", "http://localhost:8233")
    assert codec.ui_token is not None and codec.ui_token.get_secret_value() == first["api_read_token"]


def test_keys_generate_prints_a_usable_entry():
    from starter import app

    result = CliRunner().invoke(app, ["keys", "generate", "--prefix", "prod-"])
    assert result.exit_code == 0, result.output
    [key] = parse_encryption_keys(result.output.strip(), "ESCALATION_ENCRYPTION_KEYS")
    assert key.id.startswith("prod-") and len(key.secret) == 32


# -- the codec endpoints -------------------------------------------------------------------

UI = "http://127.0.0.1:8233"


def codec_app(**codec: object):
    # The UI's stand-in must read and nothing else: it is sent without anyone presenting it.
    tokens = ("api-token", token_entry("ui", ["read"], "ui-token"), token_entry("ops", ["read", "act"], "ops-token"))
    settings = ApiSettings.of(tokens=tokens, database_url="postgresql://unused/x",
                              codec=CodecSettings.of(encryption_keys=SecretStr(TEST_KEYS), **codec))
    return create_app(settings)


def as_json(*payloads: Payload) -> dict:
    return {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                          "data": base64.b64encode(p.data).decode()} for p in payloads]}


async def test_the_codec_endpoints_encode_and_decode_for_the_cli_and_the_ui():
    app = codec_app(ui_origins=(UI,), ui_token=SecretStr("ui-token"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        auth = {"Authorization": "Bearer api-token"}
        plain = as_json(json_payload({"customer": "Acme Corp"}))
        encoded = await http.post("/codec/encode", json=plain, headers=auth)
        assert encoded.status_code == 200, encoded.text
        [sealed] = encoded.json()["payloads"]
        assert base64.b64decode(sealed["metadata"]["encryption-key-id"]) == b"test-1"
        assert b"Acme" not in base64.b64decode(sealed["data"])
        decoded = await http.post("/codec/decode", json=encoded.json(), headers={**auth, "X-Namespace": "default"})
        assert decoded.status_code == 200 and decoded.json() == plain
        assert (await http.post("/codec/decode", json={"payloads": []}, headers=auth)).json() == {"payloads": []}

        # No token, a wrong one, or a browser elsewhere: 401 (and no CORS grant).
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Origin": "http://evil.example"}):
            refused = await http.post("/codec/decode", json=encoded.json(), headers=headers)
            assert refused.status_code == 401, headers
            assert "access-control-allow-origin" not in refused.headers
        # The UI: its preflight is granted, and its token-less call stands for its token.
        preflight = await http.options("/codec/decode", headers={
            "Origin": UI, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI
        from_ui = await http.post("/codec/decode", json=encoded.json(), headers={"Origin": UI, "X-Namespace": "default"})
        assert from_ui.status_code == 200 and from_ui.json() == plain
        assert from_ui.headers["access-control-allow-origin"] == UI
        # CORS is for /codec only.
        other = await http.options("/escalations", headers={"Origin": UI, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers

        # A payload under a key the API does not hold, or not base64: 422 naming it.
        foreign = EncryptionCodec(parse_encryption_keys(OTHER_KEY, "X")).encode_now([json_payload(1)])
        unknown = await http.post("/codec/decode", json=as_json(json_payload(0), *foreign), headers=auth)
        assert unknown.status_code == 422
        assert "payload 1" in unknown.json()["detail"] and "'test-2'" in unknown.json()["detail"]
        assert unknown.json()["errors"][0]["loc"] == ["body", "payloads", 1]
        garbled = await http.post("/codec/decode", json={"payloads": [{"data": "%%%"}]}, headers=auth)
        assert garbled.status_code == 422 and garbled.json()["errors"][0]["loc"] == ["body", "payloads", 0, "data"]
        shapeless = await http.post("/codec/decode", json={"payloads": "x"}, headers=auth)
        assert shapeless.status_code == 422


async def test_without_a_ui_token_the_ui_needs_a_token_like_anyone():
    app = codec_app(ui_origins=(UI,))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        body = as_json(json_payload(1))
        assert (await http.post("/codec/encode", json=body, headers={"Origin": UI})).status_code == 401
        passed = await http.post("/codec/encode", json=body, headers={"Origin": UI, "Authorization": "Bearer ui-token"})
        assert passed.status_code == 200 and passed.headers["access-control-allow-origin"] == UI


def test_a_ui_token_must_be_a_read_only_api_token():
    with pytest.raises(ConfigError, match="ESCALATION_CODEC_UI_TOKEN must be one of ESCALATION_API_TOKENS"):
        codec_app(ui_origins=(UI,), ui_token=SecretStr("unknown"))
    with pytest.raises(ConfigError, match="ESCALATION_CODEC_UI_TOKEN must be a token with scope read only"):
        codec_app(ui_origins=(UI,), ui_token=SecretStr("ops-token"))



def test_failure_messages_are_encrypted_but_the_data_free_not_ready():
    from temporalio.api.failure.v1 import Failure
    from temporalio.converter import PayloadConverter
    from temporalio.exceptions import ApplicationError

    from escalations.temporal import EncryptedFailureConverter

    converter, payloads = EncryptedFailureConverter(), PayloadConverter.default
    secret, opening = Failure(), Failure()
    converter.to_failure(ApplicationError("cannot page Acme Corp", type="InvalidCommand"), payloads, secret)
    converter.to_failure(ApplicationError("escalation is still opening", type="NotReady"), payloads, opening)
    # Moved into the encoded attributes, which the payload codec then encrypts.
    assert secret.message == "Encoded failure" and secret.HasField("encoded_attributes")
    # A failed query reaches the client as this bare message: the client tells "opening" by it.
    assert opening.message == "escalation is still opening" and not opening.HasField("encoded_attributes")
