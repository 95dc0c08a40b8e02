-- cancel: cancel a scheduled, queued, awaiting or active job.
-- KEYS[1] queue prefix
-- ARGV[1] job id, ARGV[2] tenant or '' (any): another tenant's job is NOTFOUND
-- Flow control: a cancelled active job keeps its gates' slots (set `held`) until its attempt
-- ends; a queued one leaves its flow's line.
-- returns the job hash after the change (HGETALL); error 'NOTFOUND' when missing, 'STATE <status>' when final
local id = ARGV[1]
local k = jkey(id)
local cur = redis.call('HMGET', k, 's', 't', 'tn', 'w', 'fl', 'sa', 'b')
local s = cur[1]
if not s or (ARGV[2] ~= '' and cur[3] ~= ARGV[2]) then return redis.error_reply('NOTFOUND') end
if s == 'cancelled' then return redis.call('HGETALL', k) end
if s == 'completed' or s == 'failed' then return redis.error_reply('STATE ' .. s) end
local now = now_s()
if cur[5] and s == 'queued' then
  flow_remove(cur[5], id)
else
  redis.call('ZREM', P .. 'ready', id)
end
redis.call('ZREM', P .. 'sched', id)
redis.call('ZREM', P .. 'await', id)  -- an awaiting job: its deadline no longer applies
local lease = redis.call('ZSCORE', P .. 'active', id)  -- an active job's lease expiry
redis.call('ZREM', P .. 'active', id)
redis.call('HSET', k, 's', 'cancelled', 'fa', fmt(now))
redis.call('HDEL', k, 'sf', 'ad')
if cur[5] and s == 'active' and lease then
  -- A running flow-controlled attempt keeps its lease and its gates' slots until its worker
  -- reports that the handler has ended (end_held), or the lease expires (recover).
  redis.call('ZADD', P .. 'held', lease, id)
end
redis.call('ZADD', P .. 'f:cancelled', now, id)
batch_end(cur[7], 'cancelled')  -- a member of a batch with callbacks: counted in its part
event('cancelled', id, cur[2], cur[3], '{"from":"' .. s .. '"}')
-- Fan-in (includes/fanin.lua): a child's edge settles; a waiting parent stops waiting and
-- its pending children are cancelled (through the outbox: they may live in other slots).
settle_edge(id, 'cancelled', nil, nil)
if redis.call('HGET', k, 'fw') == '1' then
  redis.call('HSET', k, 'fw', 0)
  cancel_pending(id)
end
if s == 'active' and cur[4] then
  -- Tell the holding worker now (it blocks on this key beside the queue marker).
  redis.call('ZADD', P .. 'wk:' .. cur[4], 0, 'c')
end
return redis.call('HGETALL', k)
