"""Hash slots: what one script or transaction touches is in one Redis Cluster slot.

Every key family a tenant or conversation owns must land in the tenant's slot (the
reply, admission and history scripts mix them), and a partition's stream and its
de-duplication markers in the partition's: a family added later with a name that
escapes its tag fails here before it fails on a cluster."""

from __future__ import annotations

import inspect

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from mtdesk.core import keys
from mtdesk.core.keys import Scope

_HELPERS = {"tenant_pattern", "tenant_prefix", "parse", "slot_of", "tag_of", "slot_alias",
            "global_key", "global_pattern"}


def _tenant_key_makers() -> list[str]:
    names = [n for f in keys.FAMILIES if f.scope is not Scope.GLOBAL for n in f.made_by]
    assert len(names) > 15
    return names


def _call(name: str, tenant: str, other: str) -> str:
    fn = getattr(keys, name)
    params = list(inspect.signature(fn).parameters)
    assert params[0] == "tenant_id", f"keys.{name} does not take the tenant first"
    return str(fn(tenant, *([other] * (len(params) - 1))))


@given(tenant=st.from_regex(r"t_[0-9a-f]{1,16}", fullmatch=True),
       other=st.text(st.characters(blacklist_characters="{}"), max_size=20))
def test_every_key_of_a_tenant_is_in_the_tenant_s_slot(tenant: str, other: str) -> None:
    slot = keys.slot_of(keys.tenant(tenant))
    for name in _tenant_key_makers():
        key = _call(name, tenant, other)
        assert keys.slot_of(key) == slot, f"keys.{name} leaves the tenant's slot: {key!r}"
        ref = keys.parse(key)
        assert ref is not None and ref.tenant == tenant
    # The erasure marker names no tenant but sits in its slot (watched with its keys).
    assert keys.slot_of(keys.erased(tenant)) == slot
    assert tenant not in keys.erased(tenant)


@given(partition=st.integers(0, 4095), event_id=st.text(max_size=40))
def test_a_partition_s_stream_and_its_markers_share_a_slot(partition: int, event_id: str) -> None:
    assert keys.slot_of(keys.seen(event_id, partition)) == keys.slot_of(keys.inbound(partition))


@given(channel=st.sampled_from(["messenger", "instagram", "whatsapp"]),
       account=st.from_regex(r"[0-9]{1,20}", fullmatch=True),
       seconds=st.lists(st.integers(0, 2**40), min_size=2, max_size=5))
def test_an_account_s_send_windows_stay_on_one_master(channel: str, account: str,
                                                     seconds: list[int]) -> None:
    """Every second's window of one account in one slot: a master's failure stops the
    sends of the accounts it holds, not every account's one second in three."""
    assert len({key_slot(keys.rate(channel, account, s).encode()) for s in seconds}) == 1


def test_the_slot_is_redis_cluster_s_own_computation() -> None:
    for key in ("mt:t:{t_1}:hist:x", "mt:in:{7}", "plain", "a{}b", "{x}{y}"):
        assert keys.slot_of(key) == key_slot(key.encode())
    assert keys.tag_of("mt:in:{7}") == "7" and keys.tag_of("a{}b") == "a{}b"


def test_every_line_of_the_slot_alias_table_is_in_its_slot() -> None:
    aliases = [keys.slot_alias(f"s{i}") for i in range(0, 16384, 97)]
    for i, alias in zip(range(0, 16384, 97), aliases, strict=True):
        assert keys.slot_of(alias) == keys.slot_of(f"s{i}")
    table = keys._aliases()
    assert len(table) == keys.SLOTS
    assert all(key_slot(name.encode()) == slot for slot, name in enumerate(table))


def test_older_untagged_names_are_still_read() -> None:
    ref = keys.parse("mt:t:t_old:hist:messenger:1:2")
    assert ref is not None and ref.family is keys.HISTORY and ref.tenant == "t_old"
    assert keys.parse("mt:t:{t_1}x:bot") is None
