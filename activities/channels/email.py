"""E-mail over SMTP (aiosmtplib): multipart/alternative, plain text and HTML.

The ``Message-ID`` is derived from the notification key, so a retried send of
one delivery carries the same id (mail systems and people can recognise the
repeat); ``X-Escalation-Key`` carries the key itself, and ``References`` ties
every message of one escalation into one thread. The address is the contact's
target, or for the customer without a target ``escalation.customer.email``.
"""

from __future__ import annotations

import email.utils
import hashlib
import ssl
from email.message import EmailMessage

import aiosmtplib

from activities.channels import (
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SendResult,
)
from escalations.settings import NotificationSettings

KEY_HEADER = "X-Escalation-Key"
TICKET_HEADER = "X-Escalation-Ticket"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _domain(address: str) -> str:
    _, addr = email.utils.parseaddr(address)
    domain = addr.rpartition("@")[2]
    return domain or "escalations.invalid"


def message_id(key: str, sender: str) -> str:
    """The same ``Message-ID`` for every attempt at one delivery."""
    return f"<notification.{_digest(key)}@{_domain(sender)}>"


def thread_id(escalation_id: str, sender: str) -> str:
    return f"<escalation.{_digest(escalation_id)}@{_domain(sender)}>"


def recipient_address(delivery: Delivery) -> str:
    intent = delivery.intent
    address = intent.target
    if not address and intent.audience == "customer":
        customer = intent.context["escalation"].get("customer") or {}
        address = customer.get("email")
    if not address:
        raise PermanentDeliveryError(
            "no e-mail address: the contact has no target"
            + (" and the customer has no email" if intent.audience == "customer" else "")
        )
    _, parsed = email.utils.parseaddr(address)
    if "@" not in parsed or " " in parsed:
        raise PermanentDeliveryError(f"not an e-mail address: {address!r}")
    return address


def build_message(delivery: Delivery, sender: str, to: str) -> EmailMessage:
    intent, rendered = delivery.intent, delivery.message
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = message_id(intent.key, sender)
    msg["References"] = thread_id(intent.escalation_id, sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg[KEY_HEADER] = intent.key
    msg[TICKET_HEADER] = intent.ticket_id
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


class EmailSender:
    def __init__(self, settings: NotificationSettings):
        self._settings = settings

    def _check_settings(self) -> None:
        s = self._settings
        missing = [
            name
            for name, value in (
                ("ESCALATION_SMTP_HOST", s.smtp_host),
                ("ESCALATION_SMTP_FROM", s.smtp_from),
            )
            if not value
        ]
        if s.smtp_username and s.smtp_password is None:
            missing.append("ESCALATION_SMTP_PASSWORD")
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise PermanentDeliveryError(
                f"e-mail is not configured: {', '.join(missing)} {verb} not set"
            )

    async def send(self, delivery: Delivery) -> SendResult:
        self._check_settings()
        s = self._settings
        assert s.smtp_host is not None and s.smtp_from is not None
        to = recipient_address(delivery)
        msg = build_message(delivery, s.smtp_from, to)
        where = f"SMTP {s.smtp_host}:{s.smtp_port}"
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_tls,
                start_tls=False if s.smtp_tls else s.starttls,
                cert_bundle=s.smtp_ca_file,
                timeout=s.request_timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(
                f"{where}: authentication failed ({exc.code} {exc.message}); check "
                "ESCALATION_SMTP_USERNAME and ESCALATION_SMTP_PASSWORD"
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if all(400 <= code < 500 for code in codes):
                raise RetryableDeliveryError(f"{where}: recipient deferred: {text}") from None
            raise PermanentDeliveryError(f"{where}: recipient refused: {text}") from None
        except aiosmtplib.SMTPResponseException as exc:
            summary = f"{where}: {type(exc).__name__} {exc.code} {exc.message}"
            if 400 <= exc.code < 500:
                raise RetryableDeliveryError(summary) from None
            raise PermanentDeliveryError(summary) from None
        except aiosmtplib.SMTPTimeoutError:
            raise RetryableDeliveryError(
                f"{where}: no response within {s.request_timeout:g}s"
            ) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise RetryableDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None
        except aiosmtplib.SMTPException as exc:
            # STARTTLS or AUTH not offered, and the like: the settings do not fit the server.
            raise PermanentDeliveryError(f"{where}: {exc}") from None
        except ssl.SSLError as exc:
            raise PermanentDeliveryError(f"{where}: TLS failed: {exc}") from None
        except OSError as exc:
            raise RetryableDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None
        return SendResult(msg["Message-ID"])
