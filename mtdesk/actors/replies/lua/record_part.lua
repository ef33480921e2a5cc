-- record_part(reply, history, convs, outbound, index, mid, msg, card, conv, now_ms,
-- ttl_out, end_state, reason, reply_ttl): part ``index`` of the reply (Graph id ``mid``,
-- stored message ``msg``) was accepted by Meta: its progress, its history entry and its
-- outbound link, once (a part already recorded is not recorded again); with
-- ``end_state`` (not '') also the reply's end unless it is terminal. One read and one
-- write of the record. A terminal reply keeps its state; its part is recorded. A record
-- that was gone (erased mid-send) gets its TTL again. Returns 1 when the part was
-- recorded now, else 0.
local function record_part(reply, history, convs, outbound, index, mid, msg, card, conv,
                           now_ms, ttl_out, end_state, reason, reply_ttl)
  local rec = redis.call('HMGET', reply, 'parts_sent', 'mids', 'state')
  local state = rec[3]
  local terminal = state and TERMINAL[state]
  local set = {}
  local recorded = 0
  if tonumber(rec[1] or '0') <= index then
    local mids = rec[2]
    if mids and mids ~= '' then mids = mids .. ' ' .. mid else mids = mid end
    set = {'parts_sent', index + 1, 'mids', mids}
    if not terminal then
      set[#set + 1] = 'state'
      set[#set + 1] = 'sending'
    end
    append_history(history, convs, outbound, msg, card, conv, now_ms, ttl_out)
    recorded = 1
  end
  if end_state ~= '' and not terminal then
    set[#set + 1] = 'state'  -- after 'sending' above: the later value wins
    set[#set + 1] = end_state
    set[#set + 1] = 'reason'
    set[#set + 1] = reason
  end
  if #set > 0 then
    set[#set + 1] = 'updated_ms'
    set[#set + 1] = now_ms
    redis.call('HSET', reply, unpack(set))
    if not state then redis.call('EXPIRE', reply, tonumber(reply_ttl)) end
  end
  return recorded
end
