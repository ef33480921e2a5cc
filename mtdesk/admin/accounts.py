"""Accounts: sign-up, sign-in, sign-out, password reset, and the team (owners, agents).

Routes (under ``/admin/api/v1``):

- ``POST /auth/signup`` ``{name, email, password, company}`` → 201 with the session
  cookie: creates the tenant (named after the company) and its owner. Nothing is left
  behind when any step fails.
- ``POST /auth/login`` ``{email, password}`` → 200 with the cookie; a wrong password and
  an unknown e-mail get the same 401 body; throttled (429) per e-mail and per address.
- ``POST /auth/logout`` ends the session (its CSRF token needed) and clears the cookies.
- ``GET /auth/me``: who is signed in, and the CSRF token to send with changes.
- ``POST /auth/forgot`` ``{email}`` → 202 whether or not the e-mail is known; a known one
  gets a one-time link ``<public url>/admin/#reset=<token>`` valid one hour (at most one
  mail a minute per address).
- ``POST /auth/reset`` ``{token, password}``: sets the password, ends every session of
  that user. ``POST /auth/accept`` ``{token, name?, password}``: an invited person's first
  password (the invitation link ``…/admin/#invite=<token>``, valid seven days).
- ``GET /team``, ``POST /team`` ``{name, email, role}`` (invites; mails the link),
  ``DELETE /team/{id}``: owners only (an API key counts as an owner).

Every answer carries the user without the password hash; the sign-in answers also carry
``csrf_token``. Bodies are msgspec Structs that forbid unknown fields.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from mtdesk.admin.app import API_BASE, admin_routes
from mtdesk.admin.auth import principal, public, require_owner, tenant_scope
from mtdesk.admin.decode import body_errors, read_body
from mtdesk.admin.http import Forbidden, TooManyAttempts
from mtdesk.admin.mailer import send_mail
from mtdesk.admin.sessions import (
    SESSION_COOKIE,
    Sessions,
    clear_cookies,
    client_address,
    csrf_ok,
    set_cookies,
)
from mtdesk.admin.throttle import LoginThrottle
from mtdesk.core import keys
from mtdesk.core.appkeys import CLOCK, REDIS, SETTINGS
from mtdesk.core.errors import ConfigError, Unauthorized, ValidationError
from mtdesk.core.http import json_response
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Tenants, new_tenant_id, validate_email, validate_name
from mtdesk.core.users import (
    INVITE,
    RESET,
    UserRecord,
    Users,
    email_hash,
    validate_password,
    validate_role,
)

log = logging.getLogger(__name__)

RESET_TTL_S = 3600
RESET_MAIL_GAP_S = 60
INVITE_TTL_S = 7 * 24 * 3600
WRONG_CREDENTIALS = "wrong e-mail or password"
T = TypeVar("T")


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    email: str
    password: str
    company: str


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class ForgotBody(msgspec.Struct, forbid_unknown_fields=True):
    email: str


class ResetBody(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str


class AcceptBody(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str
    name: str | None = None


class InviteBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    email: str
    role: str = "agent"
    tenant_id: str | None = None


async def decode_body(request: web.Request, kind: type[T]) -> T:
    """The body decoded into ``kind`` (:func:`mtdesk.admin.decode.read_body`: a wrong,
    unknown or missing field is a 422 naming it)."""
    return await read_body(request, kind)


def _settings(request: web.Request) -> Settings:
    return request.config_dict[SETTINGS]


def _users(request: web.Request) -> Users:
    return Users(request.config_dict[REDIS], request.config_dict[CLOCK])


def _sessions(request: web.Request) -> Sessions:
    cfg = request.config_dict
    return Sessions(cfg[REDIS], cfg[CLOCK], cfg[SETTINGS])


async def _signed_in(request: web.Request, user: UserRecord, status: int) -> web.Response:
    cookie, session = await _sessions(request).start(user.tenant_id, user.id, user.role)
    tenant = await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(
        user.tenant_id)
    response = json_response({"user": user, "tenant": tenant, "csrf_token": session.csrf},
                             status)
    set_cookies(response, request, _settings(request), cookie, session)
    return response


@public
async def signup(request: web.Request) -> web.Response:
    body = await decode_body(request, SignupBody)
    with body_errors(SignupBody):
        name = validate_name(body.name)
        email = validate_email(body.email)
        company = validate_name(body.company, "company")
        password = validate_password(body.password, email)
    tenants = Tenants(request.config_dict[REDIS], request.config_dict[CLOCK])
    users = _users(request)
    tid = new_tenant_id()
    # The owner first (it claims the e-mail, so a taken one stops here with nothing made),
    # then the tenant; a failure on the way removes what was written.
    owner = await users.add(tid, name, email, "owner", password)
    try:
        await tenants.create_without_key(company, email, tenant_id=tid)
    except BaseException:
        await users.remove_unchecked(tid, owner)
        raise
    log.info("sign-up: tenant %s created by its owner %s", tid, owner.id)
    return await _signed_in(request, owner, 201)


@public
async def login(request: web.Request) -> web.Response:
    body = await decode_body(request, LoginBody)
    settings = _settings(request)
    throttle = LoginThrottle(request.config_dict[REDIS], limit=settings.accounts.login_attempts,
                             window_s=settings.accounts.login_window_s)
    address = client_address(request, settings)
    wait = await throttle.blocked_for(body.email, address)
    if wait:
        raise TooManyAttempts(
            wait, f"too many failed sign-ins; try again in {wait} s or reset the password")
    user = await _users(request).verify(body.email, body.password)
    if user is None:
        await throttle.failed(body.email, address)
        raise Unauthorized(WRONG_CREDENTIALS)
    await throttle.succeeded(body.email)
    return await _signed_in(request, user, 200)


@public
async def logout(request: web.Request) -> web.Response:
    sessions = _sessions(request)
    session = await sessions.find(request.cookies.get(SESSION_COOKIE, ""))
    if session is not None:
        if not csrf_ok(request, session):
            raise Forbidden("missing or wrong X-CSRF-Token")
        await sessions.end(session)
    response = json_response({"signed_out": True})
    clear_cookies(response)
    return response


async def me(request: web.Request) -> web.Response:
    who = principal(request)
    out: dict[str, Any] = {"kind": who.kind, "role": who.role, "tenant_id": who.tenant_id}
    if who.user_id is not None and who.tenant_id is not None:
        out["user"] = await _users(request).get(who.tenant_id, who.user_id)
        session = await _sessions(request).find(request.cookies.get(SESSION_COOKIE, ""))
        out["csrf_token"] = session.csrf if session is not None else None
    return json_response(out)


def _link(settings: Settings, kind: str, token: str) -> str:
    return f"{settings.base_url}/admin/#{kind}={token}"


@public
async def forgot(request: web.Request) -> web.Response:
    body = await decode_body(request, ForgotBody)
    email = validate_email(body.email)
    users = _users(request)
    found = await users.find(email)
    if found is not None:
        user = await users.get(*found)
        # One mail a minute per address at most: the form cannot be used to flood an inbox.
        fresh = await request.config_dict[REDIS].set(
            keys.mail_cooldown(email_hash(user.email)), b"1", nx=True, ex=RESET_MAIL_GAP_S)
        if user.status == "active" and fresh:
            token = await users.issue_link(RESET, user.tenant_id, user.id, RESET_TTL_S)
            settings = _settings(request)
            await send_mail(settings, user.email, "Reset your MT Desk password",
                            "Someone asked to reset the password of your MT Desk account.\n\n"
                            f"Set a new one here (valid for one hour, once):\n"
                            f"{_link(settings, 'reset', token.reveal())}\n\n"
                            "If it was not you, ignore this message.\n")
    # The same answer for a known and an unknown address: no account discovery.
    return json_response({"sent": "if an account has this address, a link is on its way"},
                         202)


async def _use_link(request: web.Request, purpose: str, token: str, password: str,
                    name: str | None = None) -> web.Response:
    users = _users(request)
    # Check the new password before the link is used up: a refused one keeps the link.
    secret = validate_password(password)
    clean_name = validate_name(name) if name is not None else None
    found = await users.consume_link(purpose, token)
    if found is None:
        raise ValidationError("token", "this link is invalid, used or expired; ask for a new one")
    await users.set_password(*found, secret)
    if clean_name is not None:
        await users.rename(*found, clean_name)
    user = await users.get(*found)
    return await _signed_in(request, user, 200)


@public
async def reset(request: web.Request) -> web.Response:
    body = await decode_body(request, ResetBody)
    return await _use_link(request, RESET, body.token, body.password)


@public
async def accept(request: web.Request) -> web.Response:
    body = await decode_body(request, AcceptBody)
    return await _use_link(request, INVITE, body.token, body.password, body.name)


async def list_team(request: web.Request) -> web.Response:
    require_owner(request)
    return json_response({"users": await _users(request).list(tenant_scope(request))})


async def invite(request: web.Request) -> web.Response:
    require_owner(request)
    body = await decode_body(request, InviteBody)
    tid = tenant_scope(request, body)
    role = validate_role(body.role)
    settings = _settings(request)
    if settings.accounts.smtp is None:  # checked first: no invited user without a mail
        raise ConfigError("MTDESK_SMTP_HOST", "is required to invite people (the link is mailed)")
    tenant = await Tenants(request.config_dict[REDIS], request.config_dict[CLOCK]).get(tid)
    users = _users(request)
    user = await users.add(tid, body.name, body.email, role, None)
    token = await users.issue_link(INVITE, tid, user.id, INVITE_TTL_S)
    try:
        await send_mail(settings, user.email, f"You are invited to {tenant.name} on MT Desk",
                        f"You were invited to answer {tenant.name}'s customers on MT Desk.\n\n"
                        f"Choose your password here (valid for seven days, once):\n"
                        f"{_link(settings, 'invite', token.reveal())}\n")
    except BaseException:
        await users.remove_unchecked(tid, user)
        raise
    return json_response(user, 201)


async def remove_member(request: web.Request) -> web.Response:
    require_owner(request)
    tid = tenant_scope(request)
    uid = request.match_info["id"]
    if principal(request).user_id == uid:
        raise ValidationError("id", "you cannot remove yourself; another owner can")
    return json_response(await _users(request).remove(tid, uid))


def add_routes(admin: web.Application) -> None:
    r = admin_routes(admin)
    r.add_post(f"{API_BASE}/auth/signup", signup)
    r.add_post(f"{API_BASE}/auth/login", login)
    r.add_post(f"{API_BASE}/auth/logout", logout)
    r.add_get(f"{API_BASE}/auth/me", me)
    r.add_post(f"{API_BASE}/auth/forgot", forgot)
    r.add_post(f"{API_BASE}/auth/reset", reset)
    r.add_post(f"{API_BASE}/auth/accept", accept)
    r.add_get(f"{API_BASE}/team", list_team)
    r.add_post(f"{API_BASE}/team", invite)
    r.add_delete(f"{API_BASE}/team/{{id}}", remove_member)
