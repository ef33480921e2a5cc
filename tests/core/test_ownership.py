"""The partition ownership map: the fewest moves that balance the shards, handed over with
the sources taking turns; the map and the operator's request read back from Redis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mtdesk.core import keys, ownership
from mtdesk.core.ownership import Ownership, moves, plan, round_robin
from mtdesk.core.redis import Redis


def test_growing_two_shards_to_three_moves_only_the_new_shard_s_share() -> None:
    before = round_robin(64, 2)
    after = plan(before, 3)
    assert sorted(after.count(s) for s in range(3)) == [21, 21, 22]
    assert sum(1 for a, b in zip(before, after, strict=True) if a != b) == 21
    assert all(b == 2 for a, b in zip(before, after, strict=True) if a != b)


def test_shrinking_moves_the_partitions_of_the_shards_that_go_and_nothing_else() -> None:
    before = round_robin(8, 3)
    after = plan(before, 1)
    assert after == [0] * 8
    assert [m[0] for m in moves(before, after)] == [1, 2, 4, 5, 7]
    assert moves(before, after)[:2] == [(1, 1, 0), (2, 2, 0)]  # sources take turns


@settings(deadline=None, max_examples=200)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=128), st.integers(1, 12))
def test_a_plan_is_balanced_and_moves_no_partition_it_could_leave(
    owners: list[int], shards: int,
) -> None:
    after = plan(owners, shards)
    counts = [after.count(s) for s in range(shards)]
    assert set(after) <= set(range(shards))
    assert max(counts) - min(counts) <= 1
    # the fewest moves: every partition of a shard still there stays, up to its share
    base, extra = divmod(len(owners), shards)
    over = sorted((owners.count(s) for s in range(shards)), reverse=True)
    kept_best = sum(min(c, base + (1 if i < extra else 0)) for i, c in enumerate(over))
    assert sum(1 for a, b in zip(owners, after, strict=True) if a == b) == kept_best
    assert plan(after, shards) == after  # a balanced map is left as it is


async def test_the_map_and_the_request_read_back_and_a_fence_names_the_epoch(redis: Redis) -> None:
    assert await ownership.read(redis) is None and await ownership.read_request(redis) is None
    m = Ownership(epoch=3, owners=[0, 1, 0], epochs=[1, 3, 1], shards=2, target=3, moving=1)
    await ownership.write(redis, m)
    back = await ownership.read(redis)
    assert back is not None and back.held(1) == {1: 3} and back.per_shard() == {0: [0, 2], 1: [1]}
    assert (await ownership.request(redis, 4)).conversation == 4
    wanted = await ownership.read_request(redis)
    assert wanted is not None and wanted.conversation == 4
    await ownership.fence(redis, 1, 3)
    assert await redis.get(keys.partition_owner(1)) == b"3"
    await redis.set(keys.shard_ownership(), b"not json")
    assert await ownership.read(redis) is None
