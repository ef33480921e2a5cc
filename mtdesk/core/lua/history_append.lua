-- append_history(history, convs, outbound, msg, conv, now_ms, ttl_out, status, id)
-- Appends one stored message (msgpack ``msg``) to the conversation's history stream
-- (entry id ``id``, '*' = Redis's clock) and moves the conversation's last activity.
-- With ``outbound`` (a hash name, or false for an inbound message) links the Graph
-- message id to its entry without moving a status that already arrived backwards; that
-- hash lives ``ttl_out`` seconds. Returns the entry id.
local function append_history(history, convs, outbound, msg, conv, now_ms, ttl_out, status, id)
  local entry = redis.call('XADD', history, id or '*', 'm', msg)
  redis.call('ZADD', convs, now_ms, conv)
  if outbound then
    redis.call('HSET', outbound, 'conv', conv, 'entry', entry)
    redis.call('HSETNX', outbound, 'status', status)
    redis.call('HSETNX', outbound, 'updated_ms', now_ms)
    redis.call('EXPIRE', outbound, tonumber(ttl_out))
  end
  return entry
end
