-- store_once(reply, history, convs, msg, card, conv, now_ms, ttl): the inbound message is
-- appended to history once per event (the reply record's ``stored`` field keeps its
-- entry id). Returns true when this call stored it.
local function store_once(reply, history, convs, msg, card, conv, now_ms, ttl)
  if redis.call('HGET', reply, 'stored') then return false end
  local entry = append_history(history, convs, false, msg, card, conv, now_ms)
  redis.call('HSET', reply, 'stored', entry, 'updated_ms', now_ms)
  redis.call('EXPIRE', reply, tonumber(ttl))
  return true
end
