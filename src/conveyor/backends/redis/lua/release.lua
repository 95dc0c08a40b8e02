-- release: return a worker's active jobs to the queue without charging the attempt (shutdown).
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] JSON array of {id, token}
-- Flow control: a released job gives its gates' slots back (no breaker verdict) and goes back
-- to its flow's line.
-- returns the number released
local n = 0
local now = now_s()
local left = {}
for _, h in ipairs(cjson.decode(ARGV[2])) do
  local id = h[1]
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'tk', 'pr', 'fl', 'sa')
  if cur[1] == 'active' and cur[2] == tostring(h[2]) then
    redis.call('ZREM', P .. 'active', id)
    redis.call('HINCRBY', k, 'a', -1)
    redis.call('HSET', k, 's', 'queued')
    redis.call('HDEL', k, 'le', 'w', 'sa', 'pg')
    if cur[4] then
      flow_add(cur[4], id, ready_score(cur[3]))
      table.insert(left, {cur[4], -1, tonumber(cur[5])})
    else
      redis.call('ZADD', P .. 'ready', ready_score(cur[3]), id)
    end
    n = n + 1
  end
end
if #left > 0 then settle(left, now) end
if redis.call('EXISTS', P .. 'held') == 1 and end_held(cjson.decode(ARGV[2]), now) then wake() end
if n > 0 then wake() end
return n
