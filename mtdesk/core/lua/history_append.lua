-- inbox_card(convs, conv, entry, msg, now_ms, ttl)
-- Keeps the conversation's inbox card (keys.inbox_card, a hash next to the index
-- ``convs``) as the message ``msg`` (msgpack StoredMessage) is stored at ``entry``:
-- the last message's line (a cut of its text), direction, kind and time; the person's
-- last message time and unread count (a person's reply from the console reads them);
-- a customer's message reopens a closed conversation. Then tells the tenant's live
-- channel (keys.live: pub/sub, nothing stored) 'm <conv> <entry>'.
local function inbox_card(convs, conv, entry, msg, now_ms, ttl)
  local prefix = string.match(convs, '^([^:]+:t:[^:]+:)convs$')
  if not prefix then return end
  local card = prefix .. 'inbox:' .. conv
  local ok, m = pcall(cmsgpack.unpack, msg)
  if ok and type(m) == 'table' then
    local dir, kind, text = m['direction'], m['kind'], m['text']
    local customer = dir == 'in' and (kind == 'message' or kind == 'postback')
    local ours = dir == 'out' and (kind == 'reply' or kind == 'agent' or kind == 'echo')
    if type(text) ~= 'string' then text = nil end
    if (customer or ours) and (text or (m['part'] or 0) == 0) then
      local line = text
      if not line then
        local att = m['attachments']
        line = (type(att) == 'table' and att[1] and ('[' .. tostring(att[1]['type']) .. ']')) or ''
      end
      redis.call('HSET', card, 'last_text', string.sub(line, 1, 280), 'last_dir', dir,
        'last_kind', kind, 'last_entry', entry, 'last_ms', now_ms)
    end
    if customer then
      redis.call('HINCRBY', card, 'unread', 1)
      local ts = tonumber(m['timestamp_ms']) or 0
      if ts > (tonumber(redis.call('HGET', card, 'last_in_ms')) or 0) then
        redis.call('HSET', card, 'last_in_ms', ts)
      end
      redis.call('HDEL', card, 'closed')
    elseif dir == 'out' and kind == 'agent' then
      redis.call('HSET', card, 'unread', 0)
    end
    if type(m['channel']) == 'string' then redis.call('HSETNX', card, 'channel', m['channel']) end
    if ttl then redis.call('EXPIRE', card, tonumber(ttl)) end
  end
  redis.call('PUBLISH', prefix .. 'live', 'm ' .. conv .. ' ' .. entry)
end

-- append_history(history, convs, outbound, msg, conv, now_ms, ttl_out, status, id)
-- Appends one stored message (msgpack ``msg``) to the conversation's history stream
-- (entry id ``id``, '*' = Redis's clock) and moves the conversation's last activity
-- and its inbox card (inbox_card above).
-- With ``outbound`` (a hash name, or false for an inbound message) links the Graph
-- message id to its entry without moving a status that already arrived backwards; that
-- hash lives ``ttl_out`` seconds. Returns the entry id.
local function append_history(history, convs, outbound, msg, conv, now_ms, ttl_out, status, id)
  local entry = redis.call('XADD', history, id or '*', 'm', msg)
  redis.call('ZADD', convs, now_ms, conv)
  if outbound then
    redis.call('HSET', outbound, 'conv', conv, 'entry', entry)
    redis.call('HSETNX', outbound, 'status', status)
    redis.call('HSETNX', outbound, 'updated_ms', now_ms)
    redis.call('EXPIRE', outbound, tonumber(ttl_out))
  end
  inbox_card(convs, conv, entry, msg, now_ms, ttl_out)
  return entry
end
