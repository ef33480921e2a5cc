-- The generated text stored before anything is sent (only from generating) and, when a
-- rate window is given, the first send's permit taken in the same step. With the pause
-- check asked (ARGV[6] = '1') a person's pause marker present drops the reply instead:
-- nothing is stored, -1. With a fence (ARGV[7], the epoch the shard holds the
-- partition at; the last key is the partition's owner key) another epoch there means
-- the partition was handed over: nothing is stored, -2. ARGV[8] (optional): the
-- suggested replies offered under the last part, kept with the text. Returns 0 (not generating:
-- nothing done), 1 (generated; no permit asked, or the window is full) or 2 (generated
-- and the permit taken).
local reply = KEYS[1]
local paused = KEYS[2]  -- the person's pause marker (keys.paused); absent = none
local window = KEYS[3]  -- the send rate window counter; absent = no permit
local fence_epoch = ARGV[7] or ''
if fence_epoch ~= '' then
  local held = redis.call('GET', KEYS[#KEYS])
  if held and held ~= fence_epoch then return -2 end
  if #KEYS == 3 then window = nil end  -- the third key was the owner key
end
local text = ARGV[1]
local provider = ARGV[2]
local model = ARGV[3]
local now_ms = ARGV[4]
local limit = tonumber(ARGV[5])
local check_pause = ARGV[6] == '1'
local suggest = ARGV[8] or ''
if redis.call('HGET', reply, 'state') ~= 'generating' then return 0 end
if check_pause and redis.call('EXISTS', paused) == 1 then return -1 end
local fields = {'state', 'generated', 'text', text, 'provider', provider, 'model', model,
  'parts_sent', 0, 'updated_ms', now_ms}
if suggest ~= '' then fields[#fields + 1] = 'suggest'; fields[#fields + 1] = suggest end
redis.call('HSET', reply, unpack(fields))
if window then return 1 + mt_acquire(window, limit) end
return 1
