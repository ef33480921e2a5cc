-- The reply's end (finish) and, when given, the conversation's context written (whatever
-- the reply's state) in the same step. Returns 1 when the state moved, else 0.
local reply = KEYS[1]
local context = KEYS[2]  -- absent = no context write
local state = ARGV[1]
local reason = ARGV[2]
local now_ms = ARGV[3]
local ttl = ARGV[4]
local context_value = ARGV[5]
local context_ttl = ARGV[6]
if context then redis.call('SET', context, context_value, 'EX', tonumber(context_ttl)) end
return finish(reply, state, reason, now_ms, ttl)
