-- inbox_card(convs, conv, entry, card, now_ms, ttl)
-- Keeps the conversation's inbox card (keys.inbox_card, a hash next to the index
-- ``convs``) as a message is stored at ``entry``. ``card`` holds the message's fields the
-- card needs, given by the caller (the stored message's text may be sealed):
-- 'direction\0kind\0part\0timestamp_ms\0channel\0has_line\0line' ('' = none), the line
-- (a cut of the text, or its first attachment's type) sealed with the tenant's key
-- like the text. The card keeps the last message's line, direction, kind and time; the
-- person's last message time and unread count (a person's reply from the console reads
-- them); a customer's message reopens a closed conversation. Then tells the tenant's
-- live channel (keys.live: pub/sub, nothing stored) 'm <conv> <entry>'.
-- Its TTL (``ttl`` seconds, when given; the retention sweep removes a card with its
-- conversation, the TTL is the backstop): a customer's message sets it once a day
-- (``ttl_day`` on the card), two days longer than ``ttl`` so it outlives every message
-- of that day; the bot's reply, which follows a customer's message, leaves it; any
-- other message sets it. A ``card`` starting with byte 1 (the shard saw no inbox open on
-- the tenant: mtdesk/actors/watchers.py) is the same card, not told on the live channel.
-- Then byte 2, the length of a name and the name (sealed like Inbox.set_profile's): a
-- customer's message puts the person's name on the card too (``profile_ms`` = now).
local function card_fields(card)
  local f, pos = {}, 1
  for i = 1, 6 do
    local at = string.find(card, '\0', pos, true)
    if not at then return nil end
    f[i] = string.sub(card, pos, at - 1)
    pos = at + 1
  end
  f[7] = string.sub(card, pos)
  return f
end

local function inbox_card(convs, conv, entry, card, now_ms, ttl)
  local prefix = string.match(convs, '^([^:]+:t:[^:]+:)convs$')
  if not prefix then return end
  local quiet = card and string.byte(card, 1) == 1
  if quiet then card = string.sub(card, 2) end
  local name
  if card and string.byte(card, 1) == 2 then  -- the person's name, its length first
    local sep = string.find(card, '\0', 2, true)
    local n = sep and tonumber(string.sub(card, 2, sep - 1))
    if n then
      name = string.sub(card, sep + 1, sep + n)
      card = string.sub(card, sep + n + 1)
    end
  end
  local f = card and card_fields(card)
  if f then
    local hash = prefix .. 'inbox:' .. conv
    local dir, kind, part, ts, channel, has_line, line = f[1], f[2], tonumber(f[3]) or 0,
      tonumber(f[4]) or 0, f[5], f[6] == '1', f[7]
    local customer = dir == 'in' and (kind == 'message' or kind == 'postback')
    local ours = dir == 'out' and (kind == 'reply' or kind == 'agent' or kind == 'echo')
    -- Everything the card takes from this message in one HSET (a customer's message
    -- reads the card once first): a few commands per message, not one per field.
    local set = {}
    if (customer or ours) and (has_line or part == 0) then
      set = {'last_text', line, 'last_dir', dir, 'last_kind', kind, 'last_entry', entry,
             'last_ms', now_ms}
    end
    if customer then
      local cur = redis.call('HMGET', hash, 'unread', 'last_in_ms', 'closed', 'channel',
        'ttl_day')
      set[#set + 1] = 'unread'
      set[#set + 1] = (tonumber(cur[1]) or 0) + 1
      if ts > (tonumber(cur[2]) or 0) then
        set[#set + 1] = 'last_in_ms'
        set[#set + 1] = ts
      end
      if cur[3] then redis.call('HDEL', hash, 'closed') end
      if name then
        set[#set + 1] = 'name'
        set[#set + 1] = name
        set[#set + 1] = 'profile_ms'
        set[#set + 1] = now_ms
      end
      if channel ~= '' and not cur[4] then
        set[#set + 1] = 'channel'
        set[#set + 1] = channel
        channel = ''
      end
      if ttl then
        local day = tostring(math.floor(tonumber(now_ms) / 86400000))
        if cur[5] == day then
          ttl = nil
        else
          set[#set + 1] = 'ttl_day'
          set[#set + 1] = day
          ttl = tonumber(ttl) + 2 * 86400
        end
      end
    elseif dir == 'out' and kind == 'agent' then
      set[#set + 1] = 'unread'
      set[#set + 1] = 0
    elseif dir == 'out' and kind == 'reply' then
      ttl = nil
    end
    if channel ~= '' and #set > 0 then
      -- A card's channel is its conversation's (the card's name holds it): written
      -- again it is the same value, so it rides in the same HSET.
      set[#set + 1] = 'channel'
      set[#set + 1] = channel
    elseif channel ~= '' then
      redis.call('HSETNX', hash, 'channel', channel)
    end
    if #set > 0 then redis.call('HSET', hash, unpack(set)) end
    if ttl then redis.call('EXPIRE', hash, tonumber(ttl)) end
  end
  if not quiet then redis.call('PUBLISH', prefix .. 'live', 'm ' .. conv .. ' ' .. entry) end
end

-- append_history(history, convs, outbound, msg, card, conv, now_ms, ttl_out, id)
-- Appends one stored message (msgpack ``msg``; ``card``: its inbox card fields) to the conversation's history stream
-- (entry id ``id``, '*' = Redis's clock) and moves the conversation's last activity
-- and its inbox card (inbox_card above).
-- With ``outbound`` (a hash name, or false for an inbound message) links the Graph
-- message id to its entry, with the time (``updated_ms``): one HSET. Its status is the
-- stored message's own until Meta reports one (the status script writes it; a status
-- that arrived before this record keeps its place). The retention sweep removes the
-- link by that time (keys.OUTBOUND: by record age), like the history entry it names;
-- once a status came it also expires with the retention period. ``ttl_out`` is the
-- card's.
-- Returns the entry id.
local function append_history(history, convs, outbound, msg, card, conv, now_ms, ttl_out, id)
  local entry = redis.call('XADD', history, id or '*', 'm', msg)
  redis.call('ZADD', convs, now_ms, conv)
  if outbound then redis.call('HSET', outbound, 'conv', conv, 'entry', entry, 'updated_ms', now_ms) end
  inbox_card(convs, conv, entry, card, now_ms, ttl_out)
  return entry
end
