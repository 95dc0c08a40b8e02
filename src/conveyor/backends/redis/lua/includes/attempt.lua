-- The one way an attempt fails, prepended to finish.lua and recover.lua: a handler's failure
-- and a lease that expired too often end the same way (sqlite: attempts._end_failed): same
-- error shape, counters, rates, breaker accounting and events.
-- kind 'retry' (scheduled after delay seconds, or queued now) or 'failed' (for good); err: the
-- error JSON (or nil); brief: the event data without the attempt, a JSON object, e.g.
-- '{"error":{"type":..,"message":..}}'. ``left`` collects {flow, 0, started} for `settle`.
-- Returns true when the caller must wake workers: the job is ready now, or scheduled (an idle
-- worker then claims and learns its due time, as after a delayed enqueue; without it, the
-- worker that acknowledged the retry slept until its next poll).
local fail_parts_ended = false  -- a final failure ended its batch's part (batch_end)
local function fail_attempt(id, kind, err, brief, delay, now, left)
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 't', 'tn', 'fl', 'sa', 'a', 'pr', 'b')
  local task, tenant, flow = cur[1], cur[2], cur[3]
  redis.call('ZREM', P .. 'active', id)
  redis.call('HDEL', k, 'le')
  if flow then table.insert(left, {flow, 0, tonumber(cur[4])}) end
  if err then redis.call('HSET', k, 'e', err) end
  bump_rate(now, 'f', 1)
  local data = '{"attempt":' .. (cur[5] or '0') .. ',' .. string.sub(brief, 2)
  if kind ~= 'retry' then
    redis.call('HSET', k, 's', 'failed', 'fa', fmt(now))
    redis.call('ZADD', P .. 'f:failed', now, id)
    event('failed', id, task, tenant, data)
    if cur[7] and batch_end(cur[7], 'failed') then fail_parts_ended = true end
    settle_edge(id, 'failed', nil, err)  -- a fan-in child (includes/fanin.lua)
    return false
  end
  redis.call('HDEL', k, 'w', 'pg')
  event('retrying', id, task, tenant, data)
  if delay > 0 then
    redis.call('HSET', k, 's', 'scheduled', 'sf', fmt(now + delay))
    redis.call('ZADD', P .. 'sched', now + delay, id)
    return true
  end
  redis.call('HSET', k, 's', 'queued')
  local score = ready_score(cur[6])
  if flow then flow_add(flow, id, score) else redis.call('ZADD', P .. 'ready', score, id) end
  return true
end
