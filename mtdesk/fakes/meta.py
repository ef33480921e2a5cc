"""Simulated Meta: real-format webhook bodies for the three channels, signed as Meta signs.

Used by the demo, the benchmarks and tests to play customers writing to a business.
Bodies are serialized the way Meta does it (non-ASCII as lowercase ``\\uXXXX``, ``/`` as
``\\/``) and signed over those exact bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Sequence

from mtdesk.core.events import Channel

_counter = itertools.count(1)


def meta_json(payload: object) -> bytes:
    """Serialize like Meta: ASCII only with lowercase \\u escapes, and ``\\/``."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return text.replace("/", "\\/").encode("ascii")


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value for ``body``."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def new_message_id(channel: Channel) -> str:
    n = next(_counter)
    token = secrets.token_hex(8)
    if channel == "whatsapp":
        return f"wamid.SIM{token}{n:08d}"
    return f"m_SIM{token}{n:08d}"


def messenger_text(
    page_id: str, psid: str, text: str, *, timestamp_ms: int, mid: str | None = None
) -> dict[str, object]:
    return {
        "object": "page",
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
                "message": {"mid": mid or new_message_id("messenger"), "text": text},
            }],
        }],
    }


def messenger_echo(
    page_id: str, psid: str, text: str, *, timestamp_ms: int, mid: str | None = None,
    app_id: int | None = None, metadata: str | None = None,
) -> dict[str, object]:
    """The echo of a message the Page sent to ``psid``: from our app (``app_id``, our
    ``metadata``), or from a person in Meta's inbox (another app id, no metadata)."""
    message: dict[str, object] = {"mid": mid or new_message_id("messenger"), "is_echo": True,
                                  "text": text}
    if app_id is not None:
        message["app_id"] = app_id
    if metadata is not None:
        message["metadata"] = metadata
    return {
        "object": "page",
        "entry": [{
            "id": page_id,
            "time": timestamp_ms,
            "messaging": [{
                "sender": {"id": page_id},
                "recipient": {"id": psid},
                "timestamp": timestamp_ms,
                "message": message,
            }],
        }],
    }


def instagram_text(
    ig_id: str, igsid: str, text: str, *, timestamp_ms: int, mid: str | None = None
) -> dict[str, object]:
    body = messenger_text(ig_id, igsid, text, timestamp_ms=timestamp_ms,
                          mid=mid or new_message_id("instagram"))
    body["object"] = "instagram"
    return body


def whatsapp_text(
    phone_number_id: str,
    wa_id: str,
    text: str,
    *,
    timestamp_ms: int,
    name: str = "Customer",
    user_id: str | None = None,
    wamid: str | None = None,
) -> dict[str, object]:
    contact: dict[str, object] = {"profile": {"name": name}, "wa_id": wa_id}
    message: dict[str, object] = {
        "from": wa_id,
        "id": wamid or new_message_id("whatsapp"),
        "timestamp": str(timestamp_ms // 1000),
        "type": "text",
        "text": {"body": text},
    }
    if user_id:
        contact["user_id"] = user_id
        message["from_user_id"] = user_id
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550000000",
                                 "phone_number_id": phone_number_id},
                    "contacts": [contact],
                    "messages": [message],
                },
            }],
        }],
    }


def text_payload(
    channel: Channel, account_id: str, user_id: str, text: str, *, timestamp_ms: int,
    message_id: str | None = None,
) -> dict[str, object]:
    """A body carrying one text message from ``user_id`` to the business ``account_id``."""
    if channel == "messenger":
        return messenger_text(account_id, user_id, text, timestamp_ms=timestamp_ms, mid=message_id)
    if channel == "instagram":
        return instagram_text(account_id, user_id, text, timestamp_ms=timestamp_ms, mid=message_id)
    return whatsapp_text(account_id, user_id, text, timestamp_ms=timestamp_ms, wamid=message_id)


def message_ids(payload: dict[str, object]) -> Sequence[str]:
    """The message ids a body built here carries (for matching replies to messages)."""
    out: list[str] = []
    for entry in payload["entry"]:  # type: ignore[attr-defined]
        for item in entry.get("messaging", ()):
            out.append(item["message"]["mid"])
        for change in entry.get("changes", ()):
            for msg in change["value"].get("messages", ()):
                out.append(msg["id"])
    return out
