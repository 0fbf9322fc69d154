"""``escalations webhook-secret URL``: the signing secret a webhook receiver verifies with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from escalations.connect import DEFAULT_DATA_DIR, read_stack
from escalations.settings import ConfigError, NotificationSettings


def register(app: typer.Typer) -> None:
    app.command("webhook-secret")(webhook_secret)


def webhook_secret(
    url: Annotated[str, typer.Argument(help="The webhook's target URL, exactly as the policy writes it")],
    customer: Annotated[bool, typer.Option(
        "--customer", help="The customer's webhook (`customer:` in the policy): it has a key of its own")] = False,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", envvar="ESCALATION_DATA_DIR",
        help="Take ESCALATION_WEBHOOK_SECRET from DIR/stack.json when it is not set")] = DEFAULT_DATA_DIR,
) -> None:
    """Print the Standard Webhooks secret (whsec_…) that the receiver at URL verifies with.

    Derived from ESCALATION_WEBHOOK_SECRET, the URL and whether it is the customer's, so it is
    the same on every run and differs for every destination. Give it only to that receiver.
    """
    try:
        settings = NotificationSettings.from_env()
        if settings.webhook_secret is None:
            stack = read_stack(data_dir)
            if stack is not None and stack.webhook_secret:
                settings = settings.with_overrides(webhook_secret=stack.webhook_secret)
        typer.echo(settings.webhook_signing_secret(url, customer=customer))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
