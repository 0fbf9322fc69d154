"""``escalations webhook-secret URL``: the signing secret a webhook receiver verifies with."""

from __future__ import annotations

from typing import Annotated

import typer

from escalations.cli.failing import DataDirOption, guarded
from escalations.cli.failing import data_dir as choose_data_dir


def register(app: typer.Typer) -> None:
    app.command("webhook-secret")(guarded(webhook_secret))


def webhook_secret(
    url: Annotated[str, typer.Argument(help="The webhook's target URL, exactly as the policy writes it")],
    customer: Annotated[bool, typer.Option(
        "--customer", help="The customer's webhook (`customer:` in the policy): it has a key of its own")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Print the Standard Webhooks secret (whsec_…) that the receiver at URL verifies with.

    Derived from ESCALATION_WEBHOOK_SECRET (else the dev stack's, from DIR/stack.json), the URL and
    whether it is the customer's, so it is the same on every run and differs for every destination.
    Give it only to that receiver.
    """
    from escalations.connect import read_stack
    from escalations.settings import NotificationSettings

    settings = NotificationSettings.from_env()
    if settings.webhook_secret is None:
        stack = read_stack(choose_data_dir(data_dir))
        if stack is not None and stack.webhook_secret:
            settings = settings.with_overrides(webhook_secret=stack.webhook_secret)
    typer.echo(settings.webhook_signing_secret(url, customer=customer))
