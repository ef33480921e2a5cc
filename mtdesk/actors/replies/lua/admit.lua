-- The whole admission of a message to be answered, in one step. Checks in the shards'
-- order: restricted, paused, the caller's reason, the plan's allowance (counted only
-- when nothing else skips the message). A skip returns {reason} and changes nothing;
-- else the inbound is stored once and, with ``claim``, claimed with no burst members
-- when it has no state: returns {'', claimed (1|0), the record's fields}.
local reply = KEYS[1]
local history = KEYS[2]
local convs = KEYS[3]
local restricted = KEYS[4]
local paused = KEYS[5]
local billing = KEYS[6]
local usage = KEYS[7]
local msg = ARGV[1]
local conv = ARGV[2]
local now_ms = ARGV[3]
local ttl = ARGV[4]
local member = ARGV[5]  -- 'channel:user_id'
local reason = ARGV[6]  -- found by the caller ('' = none)
local quota_n = tonumber(ARGV[7])
local quota_ttl = ARGV[8]
local quota_enforce = ARGV[9]
local quota_default = ARGV[10]
local claim = ARGV[11] == '1'
local card = ARGV[12]  -- the inbox card's fields
local card_ttl = ARGV[13]  -- the history's retention (s): the card's TTL
local FIELDS_FROM = 14
if redis.call('SISMEMBER', restricted, member) == 1 then return {'restricted'} end
if redis.call('EXISTS', paused) == 1 then return {'paused: human agent'} end
if reason ~= '' then return {reason} end
if quota_n > 0 then  -- 0: counted elsewhere (billing off: the shard's tally)
  local quota = mt_consume(billing, usage, quota_n, quota_ttl, quota_enforce, quota_default)
  if quota[1] == 0 then return {'quota exceeded'} end
end
local rec, at = record_of(reply, FIELDS_FROM)
local new = not rec[at.state] and not rec[at.stored]
local set = {}
store_once(rec, at, set, history, convs, msg, card, conv, now_ms, card_ttl)
local claimed = 0
if claim and not rec[at.state] then
  set[#set + 1] = 'state'
  set[#set + 1] = 'generating'
  set[#set + 1] = 'members'
  set[#set + 1] = ''
  rec[at.state] = 'generating'
  rec[at.members] = ''
  claimed = 1
end
write_record(reply, set, new, ttl, now_ms)
return {'', claimed, rec}
