-- A burst claimed: its head starts generating and every member with no state yet is
-- answered by it. KEYS: the head's record, then the members' (ids in ARGV, same order).
-- Returns the member ids claimed, or -1 when the head already has a state.
local head = KEYS[1]
local now_ms = ARGV[1]
local ttl = tonumber(ARGV[2])
local head_id = ARGV[3]
local MEMBERS_FROM = 2  -- KEYS[i] is the record of member ARGV[i + 2]
if redis.call('HEXISTS', head, 'state') == 1 then return -1 end
local claimed = {}
for i = MEMBERS_FROM, #KEYS do
  local member = KEYS[i]
  if member ~= head and redis.call('HEXISTS', member, 'state') == 0 then
    redis.call('HSET', member, 'state', 'answered', 'answered_by', head_id, 'updated_ms', now_ms)
    redis.call('EXPIRE', member, ttl)
    claimed[#claimed + 1] = ARGV[i + 2]
  end
end
redis.call('HSET', head, 'state', 'generating', 'members', table.concat(claimed, ' '),
  'updated_ms', now_ms)
redis.call('EXPIRE', head, ttl)
return claimed
