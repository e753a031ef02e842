"""Tell someone when a run fails: the log always, a webhook when one is configured.

The webhook gets a Slack-compatible body (``{"text": ...}``) plus structured fields.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def send_alert(webhook_url: str | None, *, title: str, details: dict[str, Any]) -> bool:
    """Log the alert and POST it to ``webhook_url``; returns whether the webhook took it.

    A webhook failure is logged, never raised: alerting must not mask the original error.
    """
    log.error("%s: %s", title, details)
    if not webhook_url:
        return False
    import httpx  # only when there is a webhook: keeps every ingest process start lean

    lines = "\n".join(f"• {k}: {v}" for k, v in details.items())
    body = {"text": f"*{title}*\n{lines}", "loopline": details}
    try:
        response = httpx.post(webhook_url, json=body, timeout=5.0)
    except httpx.HTTPError as exc:
        log.warning("alert webhook %s unreachable: %s", webhook_url, exc)
        return False
    if response.is_error:
        log.warning("alert webhook %s answered %s", webhook_url, response.status_code)
        return False
    return True
