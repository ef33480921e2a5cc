-- record_part(reply, history, convs, outbound, index, mid, msg, card, conv, now_ms, ttl_out):
-- part ``index`` of the reply (Graph id ``mid``, stored message ``msg``) was accepted by
-- Meta: its progress, its history entry and its outbound status hash, once (a part
-- already recorded returns 0). A terminal reply keeps its state; its part is recorded.
local function record_part(reply, history, convs, outbound, index, mid, msg, card, conv, now_ms, ttl_out)
  local sent = tonumber(redis.call('HGET', reply, 'parts_sent') or '0')
  if sent > index then return 0 end
  local mids = redis.call('HGET', reply, 'mids')
  if mids and mids ~= '' then mids = mids .. ' ' .. mid else mids = mid end
  redis.call('HSET', reply, 'parts_sent', index + 1, 'mids', mids, 'updated_ms', now_ms)
  local state = redis.call('HGET', reply, 'state')
  if not (state and TERMINAL[state]) then redis.call('HSET', reply, 'state', 'sending') end
  append_history(history, convs, outbound, msg, card, conv, now_ms, ttl_out, 'sent')
  return 1
end
