-- A part Meta accepted recorded (record_part); for the reply's last part also its end
-- and the conversation's context written, in the same step. Idempotent: a part already
-- recorded is not recorded again, a terminal state is never left, the context is
-- written either way. Returns 1 when the part was recorded now.
local reply = KEYS[1]
local history = KEYS[2]
local convs = KEYS[3]
local outbound = KEYS[4]
local context = KEYS[5]  -- absent = no context write
local index = tonumber(ARGV[1])
local mid = ARGV[2]
local msg = ARGV[3]
local conv = ARGV[4]
local now_ms = ARGV[5]
local ttl_out = ARGV[6]
local end_state = ARGV[7]  -- '' = not the last part: the reply goes on
local reason = ARGV[8]
local reply_ttl = ARGV[9]
local card = ARGV[10]  -- the inbox card's fields
local context_value = ARGV[11]
local context_ttl = ARGV[12]
local recorded = record_part(reply, history, convs, outbound, index, mid, msg, card, conv,
                             now_ms, ttl_out, end_state, reason, reply_ttl)
if context then redis.call('SET', context, context_value, 'EX', tonumber(context_ttl)) end
return recorded
