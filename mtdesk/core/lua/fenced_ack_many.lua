-- fenced_ack.lua for several partition streams in one call (a single Redis, where a
-- script may touch keys of any slot): KEYS are stream, owner pairs; ARGV the group,
-- then per stream its epoch, the number of its ids and the ids. Each stream is
-- acknowledged and its entries deleted unless its owner key names another epoch than
-- the caller's. Returns per stream 1 (done) or -1 (refused: handed over).
local group = ARGV[1]
local done = {}
local at = 2
for k = 1, #KEYS, 2 do
  local epoch, count = ARGV[at], tonumber(ARGV[at + 1])
  local first, last = at + 2, at + 1 + count
  at = last + 1
  local held = epoch ~= '' and redis.call('GET', KEYS[k + 1])
  if held and held ~= epoch then
    done[#done + 1] = -1
  else
    redis.call('XACK', KEYS[k], group, unpack(ARGV, first, last))
    redis.call('XDEL', KEYS[k], unpack(ARGV, first, last))
    done[#done + 1] = 1
  end
end
return done
