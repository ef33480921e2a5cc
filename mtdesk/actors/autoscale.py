"""The optional autoscaling rule: conversation shards follow queue lag within min/max.

On when ``MTDESK_SHARDS_MAX`` is set (``settings.shards_max > 0``). The director feeds
:meth:`LagRule.observe` the highest ``lag_ms`` of its shards (the age of the oldest entry
not yet finished, as the cluster report says) every few seconds; the rule answers the
shard count to ask for, or None:

- one more shard (up to ``shards_max``) once the lag stayed above ``shards_lag_ms`` for
  ``shards_scale_after_s``;
- one fewer (down to ``shards_min``) once it stayed below a tenth of that for four times
  as long (shrinking is slower than growing: a handover costs more than a spare shard);
- after a change, nothing for ``shards_scale_after_s`` (the new count settles first).

Pure (time is passed in): a table test covers it. The count asked for goes through the
same request an operator makes (:func:`mtdesk.core.ownership.request`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LagRule:
    min_shards: int
    max_shards: int
    lag_ms: int
    after_s: float
    _high_since: float | None = None
    _low_since: float | None = None
    _quiet_until: float = 0.0

    def observe(self, shards: int, lag_ms: int, now: float) -> int | None:
        """The count to ask for given ``lag_ms`` now with ``shards`` running, or None."""
        if now < self._quiet_until:
            return None
        high, low = lag_ms > self.lag_ms, lag_ms < self.lag_ms / 10
        if not high:
            self._high_since = None
        elif self._high_since is None:
            self._high_since = now
        if not low:
            self._low_since = None
        elif self._low_since is None:
            self._low_since = now
        wanted: int | None = None
        if (self._high_since is not None and shards < self.max_shards
                and now - self._high_since >= self.after_s):
            wanted = shards + 1
        elif (self._low_since is not None and shards > self.min_shards
              and now - self._low_since >= 4 * self.after_s):
            wanted = shards - 1
        if shards < self.min_shards:
            wanted = self.min_shards
        elif shards > self.max_shards:
            wanted = self.max_shards
        if wanted is not None:
            self._high_since = self._low_since = None
            self._quiet_until = now + self.after_s
        return wanted
