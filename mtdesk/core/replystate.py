"""The exactly-once reply state machine, as a pure table (no I/O).

A reply's state is the ``state`` field of ``keys.reply(tenant, event_id)``, the hash of
the inbound event it answers. The states, and the steps that move between them::

    (none) ──claim──► generating ──generated──► generated ──part_sent──► sending ─┐
      │                  │                          │                   part_sent ◄┘
      │                  └────── sent | fail ◄──────┴───────────────────────┘
      ├──skip──► skipped            (sent → sent, fail → failed)
      └──answer_with──► answered    (a burst member, answered by its head's reply)

Callers rely on:

- :func:`after` is the whole table: the state a step leads to, or ``None`` when the step
  does not apply there (the store then changes nothing). A terminal state
  (:data:`TERMINAL`) never moves again. ``part_sent`` applies to every other state, none
  included (the record was erased while its reply was being sent): a part Meta accepted
  is always recorded (in a terminal record too, whose state stays).
- :data:`IN_FLIGHT` are the states whose shard will still write (history, outbound and
  reply records) when it gets there: erasure waits for them to settle.
- :func:`on_delivery` says what a shard does with an event whose record is in a state,
  on every delivery (first, redelivered, or re-read after a restart).

The Lua scripts of :mod:`mtdesk.actors.replies` get these sets from here
(:func:`lua_prelude`), and a test runs every step of the table against them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


class ReplyState(StrEnum):
    NONE = ""  # no reply record yet (or it has no state: only the inbound is stored)
    GENERATING = "generating"  # claimed; the model is being asked
    GENERATED = "generated"  # the text is stored, nothing sent yet
    SENDING = "sending"  # ``parts_sent`` parts of the stored text accepted by Meta
    SENT = "sent"
    SKIPPED = "skipped"  # recorded, never answered (the reason says why)
    FAILED = "failed"  # the send ended in a Graph error (or the channel is gone)
    ANSWERED = "answered"  # a burst member: the reply of ``answered_by`` answered it


class Step(StrEnum):
    SKIP = "skip"
    CLAIM = "claim"
    ANSWER_WITH = "answer_with"  # a burst member claimed by its head
    GENERATED = "generated"
    PART_SENT = "part_sent"
    SENT = "sent"
    FAIL = "fail"


S = ReplyState
TERMINAL: Final = frozenset({S.SENT, S.SKIPPED, S.FAILED, S.ANSWERED})
IN_FLIGHT: Final = frozenset({S.GENERATING, S.GENERATED, S.SENDING})
RESUMABLE: Final = frozenset({S.GENERATED, S.SENDING})  # resume the stored text's send

_ENDS: Final = {Step.SENT: S.SENT, Step.FAIL: S.FAILED}

TRANSITIONS: Final[dict[tuple[ReplyState, Step], ReplyState]] = {
    (S.NONE, Step.SKIP): S.SKIPPED,
    (S.NONE, Step.CLAIM): S.GENERATING,
    (S.NONE, Step.ANSWER_WITH): S.ANSWERED,
    (S.GENERATING, Step.GENERATED): S.GENERATED,
    # A part Meta accepted is always recorded; whatever the state, bar a terminal one,
    # the reply is then sending.
    **{(state, Step.PART_SENT): S.SENDING for state in (S.NONE, *IN_FLIGHT)},
    **{(state, step): end for state in (S.NONE, *IN_FLIGHT) for step, end in _ENDS.items()},
}


def after(state: ReplyState, step: Step) -> ReplyState | None:
    """The state ``step`` leads to from ``state``; None when it does not apply."""
    return TRANSITIONS.get((state, step))


Move = Literal["answer", "generate", "resume", "done"]


def on_delivery(state: ReplyState) -> Move:
    """What to do with an event whose reply record is in ``state``: ``answer`` it (no
    reply yet), ``generate`` again (the model was asked, nothing was sent: for a burst,
    the members' texts come back from history), ``resume`` the send of the stored text
    from ``parts_sent``, or nothing (``done``: acknowledge)."""
    if state in TERMINAL:
        return "done"
    if state in RESUMABLE:
        return "resume"
    if state is S.GENERATING:
        return "generate"
    return "answer"


def lua_prelude() -> str:
    """Lua tables ``TERMINAL`` and ``IN_FLIGHT`` (state name → true) for the scripts."""
    def table(states: frozenset[ReplyState]) -> str:
        return "{" + ", ".join(f"{s.value}=true" for s in sorted(states)) + "}"
    return f"local TERMINAL = {table(TERMINAL)}\nlocal IN_FLIGHT = {table(IN_FLIGHT)}\n"
