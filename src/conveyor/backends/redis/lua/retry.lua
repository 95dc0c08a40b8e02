-- retry: move a failed or cancelled job back to queued with fresh attempts.
-- KEYS[1] queue prefix
-- ARGV[1] job id, ARGV[2] tenant or '' (any): another tenant's job is NOTFOUND
-- ARGV[3] the queue's max_queued or '': a full queue refuses the retry (nothing changes)
-- A flow-controlled job goes back to its flow's line.
-- returns the job hash after the change (HGETALL); error 'NOTFOUND', 'STATE <status>' or
-- 'QUEUEFULL <count> 1 <limit>'
local id = ARGV[1]
local k = jkey(id)
local cur = redis.call('HMGET', k, 's', 't', 'tn', 'pr', 'fl', 'b')
local s = cur[1]
if not s or (ARGV[2] ~= '' and cur[3] ~= ARGV[2]) then return redis.error_reply('NOTFOUND') end
if s ~= 'failed' and s ~= 'cancelled' then return redis.error_reply('STATE ' .. s) end
local limit = tonumber(ARGV[3] or '')
if limit then
  local count = waiting(now_s())
  if count + 1 > limit then return queue_full(count, 1, limit) end
  redis.call('SET', P .. 'maxq', limit)
end
redis.call('ZREM', P .. 'f:' .. s, id)
-- A member of a batch with callbacks runs again: its part no longer counts it ended (after the
-- callbacks fired the part is gone and nothing changes).
if cur[6] and redis.call('EXISTS', P .. 'bp:' .. cur[6]) == 1 then
  redis.call('HINCRBY', P .. 'bp:' .. cur[6], s, -1)
end
-- A cancelled attempt still running held its gates' slots: the retry frees them.
if s == 'cancelled' then end_held({{id, false}}, now_s()) end
redis.call('HSET', k, 's', 'queued', 'a', 0, 'st', 0)
redis.call('HDEL', k, 'fa', 'e', 'r', 'w', 'sa', 'sf', 'pg')
if cur[5] then
  flow_add(cur[5], id, ready_score(cur[4]))
else
  redis.call('ZADD', P .. 'ready', ready_score(cur[4]), id)
end
event('retrying', id, cur[2], cur[3], '{"manual":true}')
wake()
return redis.call('HGETALL', k)
