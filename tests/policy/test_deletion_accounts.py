"""Deleting an account also erases the people who signed in to it: users, their e-mail
index, sessions, API keys, pending reset links and Meta login states; a session stops
working as soon as the deletion is asked, and the e-mail can sign up again after."""

from __future__ import annotations

from pathlib import Path

from _privacy_world import make_settings, where_found

from mtdesk.admin.sessions import Sessions
from mtdesk.core import keys
from mtdesk.core.apikeys import ApiKeys
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.core.secret import Secret
from mtdesk.core.tenants import Tenants
from mtdesk.core.users import RESET, Users, email_hash, token_hash
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker


async def test_account_deletion_erases_its_people_sessions_and_keys(
        redis: Redis, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path)
    tenants, users = Tenants(redis, clock), Users(redis, clock)
    tenant, _ = await tenants.create_without_key("Harbor", "ana@harbor.test")
    other, _ = await tenants.create_without_key("Else", "eve@else.test")
    owner = await users.add(tenant.id, "Ana", "ana@harbor.test", "owner",
                            Secret("correct horse battery"))
    agent = await users.add(tenant.id, "Bo", "bo@harbor.test", "agent", None)
    keep = await users.add(other.id, "Eve", "eve@else.test", "owner", Secret("eve's passphrase"))
    cookie, _ = await Sessions(redis, clock, settings).start(tenant.id, owner.id, "owner")
    _, key = await ApiKeys(redis, clock).create(tenant.id, "crm")
    link = await users.issue_link(RESET, tenant.id, owner.id, 3600)
    await redis.hset(keys.connect_state(token_hash("some-state")),
                     mapping={"tenant": tenant.id, "flow": "facebook"})

    await DeletionJobs(redis, clock).schedule_account(tenant.id)
    assert await tenants.authenticate(key.reveal()) is None
    worker = DeletionWorker(redis, settings, clock, batch=3)
    while await worker.run_once():
        pass

    gone = [tenant.id, owner.id, agent.id, "ana@harbor.test", "bo@harbor.test",
            email_hash("ana@harbor.test"), email_hash("bo@harbor.test")]
    assert await where_found(redis, Path(settings.data_dir), gone) == []
    assert await Sessions(redis, clock, settings).find(cookie) is None
    assert await users.consume_link(RESET, link.reveal()) is None
    assert await users.find("eve@else.test") == (other.id, keep.id)
    again = await users.add("t_new", "Ana", "ana@harbor.test", "owner", Secret("a new passphrase"))
    assert again.email == "ana@harbor.test"
