"""The autoscaling rule: one more shard after the lag stayed high long enough, one fewer
after it stayed low four times as long, never outside min/max, quiet after a change."""

from __future__ import annotations

from mtdesk.actors.autoscale import LagRule


def rule() -> LagRule:
    return LagRule(min_shards=1, max_shards=3, lag_ms=2000, after_s=10)


def test_a_lag_that_stays_high_adds_a_shard_once_and_then_waits() -> None:
    r = rule()
    assert r.observe(2, 5000, now=0) is None
    assert r.observe(2, 5000, now=9) is None
    assert r.observe(2, 5000, now=10) == 3
    assert r.observe(3, 9000, now=15) is None  # quiet after a change
    assert r.observe(3, 9000, now=40) is None  # at the maximum


def test_a_lag_that_dips_starts_the_count_again() -> None:
    r = rule()
    assert r.observe(1, 5000, now=0) is None
    assert r.observe(1, 500, now=5) is None
    assert r.observe(1, 5000, now=12) is None
    assert r.observe(1, 5000, now=22) == 2


def test_a_low_lag_removes_a_shard_after_four_times_as_long_never_below_the_minimum() -> None:
    r = rule()
    assert r.observe(2, 10, now=0) is None
    assert r.observe(2, 10, now=39) is None
    assert r.observe(2, 10, now=40) == 1
    assert r.observe(1, 10, now=200) is None
    assert r.observe(2, 1000, now=300) is None  # between low and high: no change


def test_a_count_outside_min_max_is_brought_back() -> None:
    assert rule().observe(5, 0, now=0) == 3
    assert LagRule(min_shards=2, max_shards=4, lag_ms=100, after_s=5).observe(1, 0, now=0) == 2
