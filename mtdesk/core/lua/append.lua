-- One stored message appended (MessageStore.append).
local history = KEYS[1]
local convs = KEYS[2]
local outbound = KEYS[3]  -- the outbound hash; absent for an inbound message
local msg = ARGV[1]
local conv = ARGV[2]
local now_ms = ARGV[3]
local ttl_out = ARGV[4]
local id = ARGV[5]  -- '*', or 'ms-*' for an explicit time
local card = ARGV[6]  -- the inbox card's fields (history.card_fields)
return append_history(history, convs, outbound or false, msg, card, conv, now_ms, ttl_out, id)
