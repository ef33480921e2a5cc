-- An event recorded: stored once; with a skip reason also marked skipped (when it has
-- no state yet). Returns the record's fields named after the fixed arguments.
local reply = KEYS[1]
local history = KEYS[2]
local convs = KEYS[3]
local msg = ARGV[1]
local conv = ARGV[2]
local now_ms = ARGV[3]
local ttl = ARGV[4]
local skip_reason = ARGV[5]  -- '' = to be answered
local card = ARGV[6]  -- the inbox card's fields
local FIELDS_FROM = 7
if store_once(reply, history, convs, msg, card, conv, now_ms, ttl)
    and skip_reason ~= '' and redis.call('HEXISTS', reply, 'state') == 0 then
  redis.call('HSET', reply, 'state', 'skipped', 'reason', skip_reason)
end
return redis.call('HMGET', reply, unpack(ARGV, FIELDS_FROM))
