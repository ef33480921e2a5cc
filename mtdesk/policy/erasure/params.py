"""What a deletion job erases: its parameters, one Struct per kind, tagged by ``kind``.

The admin API, the CLI and Meta's callbacks build one of these (through
:class:`~mtdesk.policy.erasure.jobs.DeletionJobs`); the job stores it as JSON in its
hash (field ``params``) until it finishes, and the worker reads it back with
:func:`decode_params` and ``match``. These name whom to erase, so they never outlive
the job (the audit record keeps none of it).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mtdesk.core.errors import ValidationError
from mtdesk.core.events import CHANNELS

Kind = Literal["account", "channel", "user", "app_user"]


class AccountErasure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                     tag_field="kind", tag="account"):
    """Everything of a tenant. ``accounts`` are its (channel, account id) pairs, taken
    when the job was scheduled: a resumed job must find accounts whose channel records
    it already erased."""

    tenant: str
    accounts: tuple[tuple[str, str], ...] = ()


class ChannelErasure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                     tag_field="kind", tag="channel"):
    """All Platform Data of one of the tenant's connected accounts."""

    tenant: str
    channel_id: str
    channel: str
    account_id: str


class UserErasure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  tag_field="kind", tag="user"):
    """One end user (PSID, IGSID, WhatsApp user id or wa_id) on one channel type."""

    tenant: str
    channel: str
    user_id: str


class ChannelTarget(msgspec.Struct, frozen=True, array_like=True):
    """One channel a Meta user connected: (tenant, channel id, channel, account id)."""

    tenant: str
    channel_id: str
    channel: str
    account_id: str


class AppUserErasure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                     tag_field="kind", tag="app_user"):
    """Meta's data-deletion request: every channel this Facebook user connected
    (resolved when scheduled, for the same reason as :class:`AccountErasure`)."""

    app_user: str
    targets: tuple[ChannelTarget, ...] = ()


JobParams = AccountErasure | ChannelErasure | UserErasure | AppUserErasure

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(JobParams)
_BY_KIND: dict[str, type[JobParams]] = {
    "account": AccountErasure, "channel": ChannelErasure, "user": UserErasure,
    "app_user": AppUserErasure,
}
KINDS: tuple[str, ...] = tuple(_BY_KIND)


def kind_of(params: JobParams) -> Kind:
    match params:
        case AccountErasure():
            return "account"
        case ChannelErasure():
            return "channel"
        case UserErasure():
            return "user"
        case AppUserErasure():
            return "app_user"


def encode_params(params: JobParams) -> bytes:
    return _encoder.encode(params)


def decode_params(raw: bytes, kind: str) -> JobParams:
    """The params stored with a job of ``kind``. Jobs queued before the params carried
    their ``kind`` are read by the job's own kind. ``ValueError`` when unreadable."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        typ = _BY_KIND.get(kind)
        if typ is None:
            raise ValueError(f"unknown job kind {kind!r}") from exc
        try:
            return msgspec.json.decode(raw, type=typ)
        except msgspec.DecodeError as again:
            raise ValueError(f"unreadable params of a {kind} job") from again


def validate_end_user(channel: object, user_id: object) -> tuple[str, str]:
    """(channel, user id) from caller input; ValidationError naming the field."""
    if channel not in CHANNELS:
        raise ValidationError("channel", f"must be one of {', '.join(CHANNELS)}")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValidationError("user_id", "is required")
    uid = user_id.strip()
    if len(uid) > 128 or any(c.isspace() or c in ":*?[]" for c in uid):
        raise ValidationError("user_id", "must be the PSID, IGSID, WhatsApp user id or wa_id")
    return str(channel), uid
