-- claim: promote due scheduled jobs, then move up to N ready jobs to active under a lease.
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] limit
-- returns {now, next_due or '', n, job1 fields (flat HGETALL), ...}
local worker, limit = ARGV[1], tonumber(ARGV[2])
local now = now_s()
local due = redis.call('ZRANGEBYSCORE', P .. 'sched', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local k = jkey(id)
  redis.call('ZADD', P .. 'ready', ready_score(redis.call('HGET', k, 'pr')), id)
  redis.call('HSET', k, 's', 'queued')
  redis.call('HDEL', k, 'sf')
end
if #due > 0 then redis.call('ZREM', P .. 'sched', unpack(due)) end
local popped = redis.call('ZPOPMIN', P .. 'ready', limit)
local out = {fmt(now), '', 0}
local n = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local k = jkey(id)
  local lease = tonumber(redis.call('HGET', k, 'l'))
  local expires = now + lease
  redis.call('HINCRBY', k, 'a', 1)
  redis.call('HSET', k, 's', 'active', 'sa', fmt(now), 'le', fmt(expires), 'w', worker)
  redis.call('HDEL', k, 'pg')
  redis.call('ZADD', P .. 'active', expires, id)
  local job = redis.call('HGETALL', k)
  local f = {}
  for x = 1, #job, 2 do f[job[x]] = job[x + 1] end
  event('started', id, f['t'], f['tn'], '{"attempt":' .. f['a'] .. '}')
  table.insert(out, id)
  table.insert(out, job)
  n = n + 1
end
out[3] = n
if n < limit then
  local first = redis.call('ZRANGE', P .. 'sched', 0, 0, 'WITHSCORES')
  if #first > 0 then out[2] = first[2] end
elseif redis.call('ZCARD', P .. 'ready') > 0 then
  wake()  -- more is ready than we took: let another blocked worker have it
end
return out
