"""The log channel: a notification that is only recorded (dev stack, demos, policies in progress)."""

from __future__ import annotations

import logging

from activities.channels import Delivery, SendResult, prepared

log = logging.getLogger("escalations.notifications.log")


class LogSender:
    def prepare(self, delivery: Delivery) -> Delivery:
        return prepared(delivery, lambda d: d.message.subject)

    async def send(self, delivery: Delivery) -> SendResult:
        intent = delivery.intent
        log.info(
            "notification %s to %s (%s, target %s): %s",
            intent.key,
            intent.recipient,
            intent.audience,
            intent.target or "-",
            delivery.message.subject,
        )
        return SendResult("log")
