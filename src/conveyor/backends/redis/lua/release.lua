-- release: return a worker's active jobs to the queue without charging the attempt (shutdown).
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] JSON array of {id, attempt}
-- returns the number released
local worker = ARGV[1]
local n = 0
for _, h in ipairs(cjson.decode(ARGV[2])) do
  local id = h[1]
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'a', 'w', 'pr')
  if cur[1] == 'active' and cur[2] == tostring(h[2]) and cur[3] == worker then
    redis.call('ZREM', P .. 'active', id)
    redis.call('HINCRBY', k, 'a', -1)
    redis.call('HSET', k, 's', 'queued')
    redis.call('HDEL', k, 'le', 'w', 'sa')
    redis.call('ZADD', P .. 'ready', ready_score(cur[4]), id)
    n = n + 1
  end
end
if n > 0 then wake() end
return n
