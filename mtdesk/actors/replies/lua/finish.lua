-- finish(reply, state, reason, now_ms, ttl): the reply leaves its state for ``state``
-- (a terminal one) unless it is already terminal. Returns 1 when it moved, else 0. A
-- record that was gone (erased meanwhile) gets its TTL again; one that exists has it.
local function finish(reply, state, reason, now_ms, ttl)
  local current = redis.call('HGET', reply, 'state')
  if current and TERMINAL[current] then return 0 end
  redis.call('HSET', reply, 'state', state, 'reason', reason, 'updated_ms', now_ms)
  if not current then redis.call('EXPIRE', reply, tonumber(ttl)) end
  return 1
end
