-- KEYS: old history, new history, conversations index, old inbox card, new inbox card,
-- old imported index, new imported index (keys.imported); ARGV: old conversation, new one.
-- The old conversation's history becomes (or joins, in time order) the new one's, and
-- its place in the index and its inbox card move with it (joining a card already there:
-- the new one's fields win, the old one's fill what it lacks), and so does the index of
-- its imported messages' times (entry id -> written ms). Returns the entries moved.
local old, new, convs = KEYS[1], KEYS[2], KEYS[3]
local old_card, new_card = KEYS[4], KEYS[5]
if old_card and redis.call('EXISTS', old_card) == 1 then
  if redis.call('EXISTS', new_card) == 0 then
    redis.call('RENAME', old_card, new_card)
  else
    local fields = redis.call('HGETALL', old_card)
    for i = 1, #fields, 2 do redis.call('HSETNX', new_card, fields[i], fields[i + 1]) end
    redis.call('DEL', old_card)
  end
end
local old_imp, new_imp = KEYS[6], KEYS[7]
local moved = 0
local function scores(index)
  local t = {}
  if index then
    local flat = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
    for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  end
  return t
end
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  if am ~= bm then return am < bm end
  return as < bs
end
if redis.call('EXISTS', old) == 1 then
  if redis.call('EXISTS', new) == 0 then
    moved = redis.call('XLEN', old)
    redis.call('RENAME', old, new)
    if old_imp and redis.call('EXISTS', old_imp) == 1 then
      if redis.call('EXISTS', new_imp) == 0 then
        redis.call('RENAME', old_imp, new_imp)
      else
        redis.call('ZUNIONSTORE', new_imp, 2, new_imp, old_imp)
        redis.call('DEL', old_imp)
      end
    end
  else
    local a_imp, b_imp = scores(old_imp), scores(new_imp)
    if old_imp then redis.call('DEL', old_imp, new_imp) end
    local a = redis.call('XRANGE', old, '-', '+')
    local b = redis.call('XRANGE', new, '-', '+')
    redis.call('DEL', new)
    local last = nil
    local function add(entry, imp)
      local id = entry[1]
      if last ~= nil and not before(last, id) then
        local ms = parts(last)
        id = string.format('%d-*', ms)
      end
      last = redis.call('XADD', new, id, unpack(entry[2]))
      local written = imp[entry[1]]
      if written then redis.call('ZADD', new_imp, written, last) end
    end
    local i, j = 1, 1
    while i <= #a or j <= #b do
      if j > #b or (i <= #a and before(a[i][1], b[j][1])) then
        add(a[i], a_imp); i = i + 1; moved = moved + 1
      else
        add(b[j], b_imp); j = j + 1
      end
    end
    redis.call('DEL', old)
  end
end
local score = redis.call('ZSCORE', convs, ARGV[1])
if score then
  local other = redis.call('ZSCORE', convs, ARGV[2])
  if not other or tonumber(other) < tonumber(score) then
    redis.call('ZADD', convs, score, ARGV[2])
  end
  redis.call('ZREM', convs, ARGV[1])
end
return moved
