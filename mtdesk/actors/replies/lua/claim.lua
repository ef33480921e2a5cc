-- A burst claimed: its head starts generating and every member with no state yet is
-- answered by it. KEYS: the head's record, then the members' (ids in ARGV, same order).
-- Returns the member ids claimed, or -1 when the head already has a state. A record
-- made here (not stored yet) gets its TTL; one admission made has it already.
local head = KEYS[1]
local now_ms = ARGV[1]
local ttl = tonumber(ARGV[2])
local head_id = ARGV[3]
local MEMBERS_FROM = 2  -- KEYS[i] is the record of member ARGV[i + 2]
local head_rec = redis.call('HMGET', head, 'state', 'stored')
if head_rec[1] then return -1 end
local claimed = {}
for i = MEMBERS_FROM, #KEYS do
  local member = KEYS[i]
  if member ~= head then
    local rec = redis.call('HMGET', member, 'state', 'stored')
    if not rec[1] then
      redis.call('HSET', member, 'state', 'answered', 'answered_by', head_id, 'updated_ms', now_ms)
      if not rec[2] then redis.call('EXPIRE', member, ttl) end
      claimed[#claimed + 1] = ARGV[i + 2]
    end
  end
end
redis.call('HSET', head, 'state', 'generating', 'members', table.concat(claimed, ' '),
  'updated_ms', now_ms)
if not head_rec[2] then redis.call('EXPIRE', head, ttl) end
return claimed
