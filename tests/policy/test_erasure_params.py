"""A deletion job's parameters are typed: one Struct per kind, stored as tagged JSON and
read back with the job's kind; jobs queued before the tag existed still run; anything
else is refused as unreadable, never guessed."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from _privacy_world import World, build_world, make_settings, where_found
from hypothesis import given
from hypothesis import strategies as st

from mtdesk.core import keys
from mtdesk.core.clock import FakeClock
from mtdesk.core.redis import Redis
from mtdesk.policy.erasure.jobs import DeletionJobs, DeletionWorker
from mtdesk.policy.erasure.notices import (
    ChannelNotice,
    ConversationsNotice,
    TenantNotice,
    decode_notice,
    encode_notice,
    notice_covers,
)
from mtdesk.policy.erasure.params import (
    AccountErasure,
    AppUserErasure,
    ChannelErasure,
    ChannelTarget,
    UserErasure,
    decode_params,
    encode_params,
    kind_of,
)

EXAMPLES = [
    AccountErasure(tenant="t_1", accounts=(("messenger", "1"), ("whatsapp", "2"))),
    ChannelErasure(tenant="t_1", channel_id="c1", channel="messenger", account_id="1"),
    UserErasure(tenant="t_1", channel="whatsapp", user_id="US.9"),
    AppUserErasure(app_user="777", targets=(ChannelTarget("t_1", "c1", "messenger", "1"),)),
]


@pytest.mark.parametrize("params", EXAMPLES, ids=kind_of)
def test_params_read_back_as_stored_and_as_queued_before_the_tag(params: object) -> None:
    raw = encode_params(params)  # type: ignore[arg-type]
    kind = kind_of(params)  # type: ignore[arg-type]
    assert json.loads(raw)["kind"] == kind
    assert decode_params(raw, kind) == params
    untagged = {k: v for k, v in json.loads(raw).items() if k != "kind"}
    assert decode_params(json.dumps(untagged).encode(), kind) == params


@pytest.mark.parametrize("raw, kind", [
    (b'{"tenant": "t_1"}', "nonsense"),
    (b'{"tenant": "t_1", "channel": "messenger"}', "user"),  # user_id missing
    (b'{"kind": "user", "tenant": "t", "channel": "m", "user_id": "u", "extra": 1}', "user"),
    (b"not json", "account"),
])
def test_unreadable_params_are_refused(raw: bytes, kind: str) -> None:
    with pytest.raises(ValueError):
        decode_params(raw, kind)


@given(st.binary(max_size=200), st.sampled_from(["account", "channel", "user", "app_user", ""]))
def test_any_stored_bytes_give_params_or_a_value_error(raw: bytes, kind: str) -> None:
    try:
        decode_params(raw, kind)
    except ValueError:
        pass


@given(st.binary(max_size=200))
def test_any_bytes_on_the_notice_channel_give_a_notice_or_a_decode_error(raw: bytes) -> None:
    try:
        notice = decode_notice(raw)
    except msgspec.DecodeError:
        return
    assert decode_notice(encode_notice(notice)) == notice


def test_notices_say_which_conversations_they_cover() -> None:
    conv = "messenger:1:u9"
    assert notice_covers(TenantNotice("t_1"), "t_1", conv)
    assert not notice_covers(TenantNotice("t_2"), "t_1", conv)
    assert notice_covers(ChannelNotice("t_1", "messenger:1:"), "t_1", conv)
    assert not notice_covers(ChannelNotice("t_1", "messenger:11:"), "t_1", conv)
    assert not notice_covers(ChannelNotice("t_1", ""), "t_1", conv)
    assert notice_covers(ConversationsNotice("t_1", (conv,)), "t_1", conv)
    assert not notice_covers(ConversationsNotice("t_1", ("messenger:1:u",)), "t_1", conv)
    # The wire format is the one listeners have always read.
    assert json.loads(encode_notice(ChannelNotice("t_1", "messenger:1:"))) == {
        "scope": "channel", "tenant": "t_1", "prefix": "messenger:1:"}


@pytest.fixture
async def world(redis: Redis, tmp_path: Path) -> World:
    return await build_world(redis, make_settings(tmp_path), FakeClock())


async def test_a_job_queued_with_untagged_params_still_erases(
    redis: Redis, world: World, tmp_path: Path
) -> None:
    w = world
    job = await DeletionJobs(redis, FakeClock()).schedule_user(w.a.id, "messenger", w.alice.user_id)
    # What a job queued before the params were tagged Structs holds.
    old = {"tenant": w.a.id, "channel": "messenger", "user_id": w.alice.user_id}
    await redis.hset(keys.deletion_job(job.id), "params", json.dumps(old))
    worker = DeletionWorker(redis, make_settings(tmp_path), FakeClock())
    while await worker.run_once():
        pass
    assert (await DeletionJobs(redis, FakeClock()).get(job.id)).status == "done"
    assert await where_found(redis, w.data_dir, w.alice.identifiers()) == []
