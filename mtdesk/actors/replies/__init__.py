"""Exactly-once replies: the state machine's records in Redis and one reply's sending.

- :class:`ReplyStore` — the reply records (one Lua script per step, see its module).
- :class:`OutgoingReply`, :class:`ReplyRun`, :class:`ContextWrite` — a reply split once
  into its parts, sent with a run that records each part and its end.
- The states and steps themselves are the pure table in :mod:`mtdesk.core.replystate`
  (re-exported here); erasure reads the same :data:`IN_FLIGHT` set.
"""

from mtdesk.actors.replies.run import (
    TAKEN_OVER,
    Context,
    ContextWrite,
    OutgoingReply,
    PartitionLost,
    ReplyRun,
    TakenOver,
)
from mtdesk.actors.replies.store import ReplyRecord, ReplyStore
from mtdesk.core.replystate import IN_FLIGHT, RESUMABLE, TERMINAL, ReplyState, Step

__all__ = ["IN_FLIGHT", "RESUMABLE", "TAKEN_OVER", "TERMINAL", "Context", "ContextWrite", "OutgoingReply",
           "PartitionLost", "ReplyRecord", "ReplyRun", "ReplyState", "ReplyStore", "Step", "TakenOver"]
