"""Instagram messaging (``object: "instagram"``).

Instagram sends the Messenger Platform's ``messaging`` items (same wire shape): text,
attachments (image, video, audio, file, ``share``, ``story_mention``, ``ig_reel``),
story replies (``reply_to.story``), reactions, postbacks, echoes, ``read`` (seen, with
the message id), ``message_edit`` and deleted messages (``message.is_deleted``). So
this adapter is the Messenger translation under the ``instagram`` channel name; what
differs is documented here and covered by the Instagram tests.
"""

from __future__ import annotations

from mtdesk.channels.messenger.inbound import MessagingItem, messaging_events
from mtdesk.core.events import Event

OBJECT = "instagram"


def instagram_events(entry_id: str, item: MessagingItem, unknown: list[str]) -> list[Event]:
    """Normalized events of one Instagram ``messaging`` item."""
    return messaging_events("instagram", entry_id, item, unknown)
