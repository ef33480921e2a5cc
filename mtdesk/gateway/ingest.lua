-- MT Desk gateway ingest: resolve tenant, de-duplicate and enqueue, atomically.
-- (A single Redis; on a cluster the routing hash is another slot: ingest_routed.lua.)
-- KEYS, per event i (0-based): [3i+1] routing hash mt:acct:{channel}:{account}
--                              [3i+2] dedup marker mt:seen:{p}:{hash(event id)}
--                              [3i+3] partition stream mt:in:{p}
-- ARGV[1]: dedup TTL in seconds; per event: [4i+2] msgpack event (sealed or not),
--          [4i+3] receive ms, [4i+4] "1" when stale, "" otherwise, [4i+5] the tenant the
--          event was sealed for ("*": not sealed, any; "": the account was not routed).
-- Returns one code per event: 0 enqueued, 1 duplicate, 2 unknown account, 3 the account
-- routes to another tenant than the event was sealed for (nothing stored or marked).
local ttl = ARGV[1]
local out = {}
local tenants = {}
for i = 0, #KEYS / 3 - 1 do
  local acct = KEYS[3 * i + 1]
  local tenant = tenants[acct]
  if tenant == nil then
    tenant = redis.call('HGET', acct, 'tenant')
    tenants[acct] = tenant
  end
  local a = 4 * i + 2
  local expect = ARGV[a + 3]
  if not tenant then
    out[i + 1] = 2
  elseif expect ~= '*' and expect ~= tenant then
    out[i + 1] = 3
  elseif redis.call('SET', KEYS[3 * i + 2], '1', 'NX', 'EX', ttl) then
    -- Never MAXLEN here: trimming an inbound stream would drop unprocessed events.
    if ARGV[a + 2] == '1' then
      redis.call('XADD', KEYS[3 * i + 3], '*', 'e', ARGV[a], 't', tenant, 'r', ARGV[a + 1], 's', '1')
    else
      redis.call('XADD', KEYS[3 * i + 3], '*', 'e', ARGV[a], 't', tenant, 'r', ARGV[a + 1])
    end
    out[i + 1] = 0
  else
    out[i + 1] = 1
  end
end
return out
