"""Links into Temporal UI: the one place that knows its URL layout."""

from __future__ import annotations

from urllib.parse import quote, urlencode


def workflow_url(ui_url: str | None, namespace: str, workflow_id: str, run_id: str | None = None) -> str | None:
    """The page of a workflow (of one run's history, given ``run_id``); None without a UI address."""
    if not ui_url:
        return None
    link = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    return f"{link}/{quote(run_id, safe='')}/history" if run_id else link


def workflows_url(ui_url: str | None, namespace: str, query: str) -> str | None:
    """The list of workflows matching a visibility ``query``; None without a UI address."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows?{urlencode({'query': query})}"
