-- Acknowledge and delete handled entries of one partition stream, unless the partition
-- was handed over: its owner key (keys.partition_owner) then names another epoch than
-- the caller's, and nothing is done (-1). No owner key, or no epoch given: unfenced.
local stream = KEYS[1]
local owner = KEYS[2]
local group = ARGV[1]
local epoch = ARGV[2]
local IDS_FROM = 3
if epoch ~= '' then
  local held = redis.call('GET', owner)
  if held and held ~= epoch then return -1 end
end
redis.call('XACK', stream, group, unpack(ARGV, IDS_FROM))
redis.call('XDEL', stream, unpack(ARGV, IDS_FROM))
return 1
