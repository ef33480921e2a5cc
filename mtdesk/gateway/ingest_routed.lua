-- MT Desk gateway ingest on a Redis Cluster: de-duplicate and enqueue, atomically, the
-- events of ONE partition (its stream and markers share the partition's hash slot; the
-- tenant was resolved by the gateway from the routing hash, cached for a second).
-- KEYS, per event i (0-based): [2i+1] dedup marker mt:seen:{p}:{hash(event id)}
--                              [2i+2] partition stream mt:in:{p}
-- ARGV[1]: dedup TTL in seconds; per event: [4i+2] msgpack event, [4i+3] receive ms,
--          [4i+4] "1" when stale, "" otherwise, [4i+5] tenant id.
-- Returns one code per event: 0 enqueued, 1 duplicate.
local ttl = ARGV[1]
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local a = 4 * i + 2
  if redis.call('SET', KEYS[2 * i + 1], '1', 'NX', 'EX', ttl) then
    -- Never MAXLEN here: trimming an inbound stream would drop unprocessed events.
    if ARGV[a + 2] == '1' then
      redis.call('XADD', KEYS[2 * i + 2], '*', 'e', ARGV[a], 't', ARGV[a + 3], 'r', ARGV[a + 1], 's', '1')
    else
      redis.call('XADD', KEYS[2 * i + 2], '*', 'e', ARGV[a], 't', ARGV[a + 3], 'r', ARGV[a + 1])
    end
    out[i + 1] = 0
  else
    out[i + 1] = 1
  end
end
return out
