-- The reply record as one read, and its writes as one (a few commands per step, not one
-- per field). record_of(reply, names_from): HMGET of the fields named in ARGV from
-- ``names_from`` on, and a field name -> index table; the script changes ``rec`` as it
-- writes, so it returns the record as it is now without reading it again.
local function record_of(reply, names_from)
  local at = {}
  for i = names_from, #ARGV do at[ARGV[i]] = i - names_from + 1 end
  return redis.call('HMGET', reply, unpack(ARGV, names_from)), at
end

-- write_record(reply, set, new, ttl, now_ms): the fields in ``set`` (name, value, …) and
-- ``updated_ms`` in one HSET; a record that did not exist before (``new``) gets its TTL
-- (set once, when it is made: the dedup window counts from the message's arrival).
local function write_record(reply, set, new, ttl, now_ms)
  if #set == 0 then return end
  set[#set + 1] = 'updated_ms'
  set[#set + 1] = now_ms
  redis.call('HSET', reply, unpack(set))
  if new then redis.call('EXPIRE', reply, tonumber(ttl)) end
end

-- store_once(rec, at, set, history, convs, msg, card, conv, now_ms, card_ttl): the
-- inbound message is appended to history once per event (the reply record's ``stored``
-- field keeps its entry id; queued in ``set``); ``card_ttl``: the inbox card's (the
-- history's retention). Returns true when this call stored it.
local function store_once(rec, at, set, history, convs, msg, card, conv, now_ms, card_ttl)
  if rec[at.stored] then return false end
  local entry = append_history(history, convs, false, msg, card, conv, now_ms, card_ttl)
  rec[at.stored] = entry
  set[#set + 1] = 'stored'
  set[#set + 1] = entry
  return true
end
