"""The one data converter: every Temporal client, worker and replayer the project builds uses it.

Pydantic JSON payloads, encrypted by ``escalations.codec`` with the configured keys
(``CodecSettings``). What the codec covers, as the installed SDK applies it: workflow and
activity inputs and results, query, signal and update arguments and results, memos, the user
metadata (static summary and details, timer and activity summaries, and the current details,
which the UI reads through a query), failure details and, with encryption on, failure messages
and stack traces (``encode_common_attributes``). What it cannot cover stays plaintext:
search attributes (the server indexes them; they hold ids and enums only), workflow and run
ids, type, task queue, activity and timer ids, update and signal names, event timestamps, a
termination's reason, headers, and the SDK's patch markers (docs/security.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.api.failure.v1 import Failure
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError

from escalations.codec import EncryptionCodec
from escalations.settings import CodecSettings


# Failures of these types keep their message in plaintext: a failed query reaches the client as
# the RPC's bare message (the server passes no failure along to decode), and "still opening" is
# how a client tells a run that is loading its policy from a broken one. They carry no data.
PLAINTEXT_FAILURE_TYPES = frozenset({"NotReady"})


class EncryptedFailureConverter(DefaultFailureConverter):
    """Messages and stack traces moved into the encoded (encrypted) attributes, except for the
    data-free failures of ``PLAINTEXT_FAILURE_TYPES``."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        if isinstance(exception, ApplicationError) and exception.type in PLAINTEXT_FAILURE_TYPES:
            DefaultFailureConverter.default.to_failure(exception, payload_converter, failure)
            return
        super().to_failure(exception, payload_converter, failure)


def data_converter(codec: CodecSettings) -> DataConverter:
    """Pydantic JSON, encrypted with ``codec``'s keys when it has any.

    Without keys the codec still decodes nothing but refuses encrypted payloads with a clear
    error (which key is missing) instead of the converter's "unknown encoding"."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(codec.keys),
        failure_converter_class=(EncryptedFailureConverter if codec.encrypted
                                 else DefaultFailureConverter),
    )


async def connect(temporal: Mapping[str, Any], codec: CodecSettings, **options: Any) -> Client:
    """``Client.connect`` with ``temporal`` (its keyword arguments, e.g. from
    ``settings.temporal_connect_config``), ``options`` over them, and the project's converter."""
    return await Client.connect(**{**temporal, **options}, data_converter=data_converter(codec))


__all__ = ["connect", "data_converter"]
