"""E-mail over SMTP (aiosmtplib): multipart/alternative, plain text and HTML.

The ``Message-ID`` is derived from the notification key, so a retried send of
one delivery carries the same id (mail systems and people can recognise the
repeat); ``X-Escalation-Key`` carries the key itself, and ``References`` ties
every message of one escalation into one thread. The address is the contact's
target, or for the customer without a target ``escalation.customer.email``: exactly one
address, checked with ``email-validator``, and handed to the SMTP server as the only
recipient (never taken from the headers). The subject is one line (``render``), so no
header can be split; the HTML part escapes every value and links only ``https:``/``mailto:``.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import ssl
from email.message import EmailMessage

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from activities.channels import (
    Delivery,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SendResult,
    header_value,
    prepared,
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


_ONE_ADDRESS = re.compile(r"\s*(?:[^<>@,;\r\n]*<([^<>\s]+)>|([^<>\s]+))\s*")


def single_address(address: str, what: str) -> str:
    """The one address in ``address`` (``a@x.example`` or ``Name <a@x.example>``), normalised.

    Several addresses, a malformed one, or one with line breaks is a permanent failure:
    an address list must never reach the SMTP envelope.
    """
    # Deliberately stricter than the header parser (which reads lists and comments): a bare
    # address, or one display name (without "<>,;@") followed by one <address>.
    found = _ONE_ADDRESS.fullmatch(address)
    if found is None:
        raise PermanentDeliveryError(f"{what} must be exactly one e-mail address: {address[:200]!r}")
    try:
        return validate_email(found.group(1) or found.group(2), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise PermanentDeliveryError(f"{what} is not a valid e-mail address: {address[:200]!r} ({exc})") from None


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
    return single_address(str(address), "the recipient")


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
    msg[KEY_HEADER] = header_value(intent.key)
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

    def _build(self, delivery: Delivery) -> tuple[EmailMessage, str, str]:
        self._check_settings()
        assert self._settings.smtp_from is not None
        to = recipient_address(delivery)
        sender = single_address(self._settings.smtp_from, "ESCALATION_SMTP_FROM")
        return build_message(delivery, self._settings.smtp_from, to), sender, to

    def prepare(self, delivery: Delivery) -> Delivery:
        return prepared(delivery, self._build)

    async def send(self, delivery: Delivery) -> SendResult:
        msg, sender, to = self.prepare(delivery).payload
        s = self._settings
        assert s.smtp_host is not None
        where = f"SMTP {s.smtp_host}:{s.smtp_port}"
        try:
            await aiosmtplib.send(
                msg,
                sender=sender,
                recipients=[to],
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
