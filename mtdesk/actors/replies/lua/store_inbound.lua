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
local card_ttl = ARGV[7]  -- the history's retention (s): the card's TTL
local FIELDS_FROM = 8
local rec, at = record_of(reply, FIELDS_FROM)
local new = not rec[at.state] and not rec[at.stored]
local set = {}
if store_once(rec, at, set, history, convs, msg, card, conv, now_ms, card_ttl)
    and skip_reason ~= '' and not rec[at.state] then
  set[#set + 1] = 'state'
  set[#set + 1] = 'skipped'
  set[#set + 1] = 'reason'
  set[#set + 1] = skip_reason
  rec[at.state] = 'skipped'
  rec[at.reason] = skip_reason
end
write_record(reply, set, new, ttl, now_ms)
return rec
