"""The admin API's request bodies, one Struct per route that takes one.

Shapes are the public contract's (DESIGN.md's provisioning calls); types and bounds are
checked while decoding (:mod:`mtdesk.admin.decode`), so a handler only sees values of the
right type and size. Checks that need more than one field or stored state (an e-mail's
syntax after trimming, known providers, a URL's address) stay with the services and
answer the same 422 through :func:`mtdesk.admin.decode.body_errors`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from mtdesk.admin.decode import Body, TenantScoped
from mtdesk.core import retrieval_layout
from mtdesk.core.tenants import BotUpdate

Text = Annotated[str, Meta(max_length=20_000)]
Short = Annotated[str, Meta(max_length=2_000)]
AccountId = Annotated[str, Meta(max_length=64)] | Annotated[int, Meta(ge=0)]


class NewTenant(Body, frozen=True, kw_only=True):
    """``POST /tenants`` (operator)."""

    name: Annotated[str, Meta(max_length=200)]
    email: Annotated[str, Meta(max_length=254)]


class TenantStatusChange(Body, frozen=True, kw_only=True):
    """``PATCH /tenants/{id}`` (operator)."""

    status: Literal["active", "suspended"]


class NewChannel(TenantScoped, frozen=True, kw_only=True):
    """``POST /channels``: ``account_id`` is the Page id, the Instagram account id or the
    WhatsApp phone_number_id (a string or a whole number)."""

    channel: Literal["messenger", "instagram", "whatsapp"]
    account_id: AccountId
    access_token: Annotated[str, Meta(max_length=4096)]
    connected_by: AccountId | None = None
    # WhatsApp: the number is also used in the WhatsApp Business app (coexistence):
    # replies are paced at its 20 messages/s.
    coexistence: bool | None = None


class BotChange(BotUpdate, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /bot``: the whole config (fields left out take their defaults), and the
    operator's ``tenant_id``."""

    tenant_id: str | None = None


class QaItem(Body, frozen=True, kw_only=True):
    """One pair: ``q``/``a`` (``question``/``answer`` are accepted too)."""

    q: Text | None = None
    a: Text | None = None
    question: Text | None = None
    answer: Text | None = None


class NewKnowledge(TenantScoped, frozen=True, kw_only=True):
    """``POST /knowledge`` as JSON: ``{"qa": [...], "name"?}`` or ``{"url", "crawl"?,
    "max_pages"?, "max_depth"?, "max_seconds"?}`` (a file comes as multipart instead)."""

    qa: Annotated[list[QaItem], Meta(max_length=10_000)] | None = None
    name: Annotated[str, Meta(max_length=200)] | None = None
    url: Annotated[str, Meta(max_length=2_000)] | None = None
    crawl: bool = False
    max_pages: Annotated[int, Meta(ge=1, le=1000)] | None = None
    max_depth: Annotated[int, Meta(ge=0, le=10)] = 3
    max_seconds: Annotated[float, Meta(ge=1, le=3600)] = 120.0


class KnowledgeAttachment(TenantScoped, frozen=True, kw_only=True):
    """``PUT /knowledge/{id}/attachment``: a public https URL of a picture or document
    sent with the answers made from the source."""

    url: Annotated[str, Meta(min_length=9, max_length=2_000)]
    type: Literal["image", "document"]
    filename: Annotated[str, Meta(min_length=1, max_length=240)] | None = None


class RetentionChange(TenantScoped, frozen=True, kw_only=True):
    """``PUT /retention``: whole days, at most the server's ``MTDESK_RETENTION_DAYS``."""

    days: Annotated[int, Meta(ge=1, le=365)]


class NewCheckout(TenantScoped, frozen=True, kw_only=True):
    """``POST /billing/checkout``."""

    price: Annotated[str, Meta(max_length=255)]
    success_url: Short | None = None
    cancel_url: Short | None = None


class NewPortal(TenantScoped, frozen=True, kw_only=True):
    """``POST /billing/portal`` (the body is optional)."""

    return_url: Short | None = None


class TemplateChoice(Body, frozen=True, kw_only=True):
    """An approved WhatsApp template: ``name``, ``language`` (its code, e.g. ``en_US``)
    and the body's ``parameters`` in order."""

    name: Annotated[str, Meta(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")]
    language: Annotated[str, Meta(min_length=2, max_length=15,
                                  pattern=r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$")]
    parameters: Annotated[list[Annotated[str, Meta(min_length=1, max_length=1024)]],
                          Meta(max_length=20)] = []


class HumanReply(TenantScoped, frozen=True, kw_only=True):
    """``POST /conversations/{key}/reply``: ``text``, or (WhatsApp) a ``template``."""

    text: Annotated[str, Meta(max_length=8_000)] | None = None
    template: TemplateChoice | None = None


class Assignment(TenantScoped, frozen=True, kw_only=True):
    """``POST /conversations/{key}/assign``: a team member's id, or null to unassign."""

    user_id: Annotated[str, Meta(max_length=64)] | None


class ConversationAction(TenantScoped, frozen=True, kw_only=True):
    """The body (optional) of hand back, close, reopen and read: the operator's
    ``tenant_id``."""


class ShardCounts(Body, frozen=True, kw_only=True):
    """``POST /cluster/shards`` (operator): the conversation shard count wanted, and the
    retrieval shard count (None: as they are)."""

    conversation: Annotated[int, Meta(ge=1, le=4096)]
    retrieval: Annotated[int, Meta(ge=1, le=retrieval_layout.MAX_SHARDS)] | None = None
