-- recover: requeue jobs whose lease expired (a stall; the attempt is not charged) or fail them
-- when their stalls are used up, through fail_attempt (includes/attempt.lua) as a handler's
-- failure would.
-- KEYS[1] queue prefix
-- Flow control: a dead worker's jobs give their gates' slots back (no breaker verdict for a
-- requeued stall; a failure for good counts as one).
-- returns flat {id, new_status, ...}
local now = now_s()
local expired = redis.call('ZRANGEBYSCORE', P .. 'active', '-inf', '(' .. now, 'LIMIT', 0, 1000)
local out = {}
local left = {}
local freed = false
for _, id in ipairs(expired) do
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 'st', 'ms', 't', 'tn', 'pr', 'fl', 'sa')
  local stalls = tonumber(cur[1] or 0) + 1
  redis.call('HSET', k, 'st', stalls)
  event('stalled', id, cur[3], cur[4], '{"stalls":' .. stalls .. '}')
  if stalls > tonumber(cur[2]) then
    local err = cjson.encode({type = 'Stalled', message = 'lease expired ' .. stalls ..
      ' times (max_stalls=' .. cur[2] .. '): the worker died or blocked its event loop'})
    fail_attempt(id, 'failed', err, '{"error":' .. err .. '}', 0, now, left)
    table.insert(out, id); table.insert(out, 'failed')
  else
    redis.call('ZREM', P .. 'active', id)
    redis.call('HDEL', k, 'le', 'w', 'pg')
    if cur[6] then table.insert(left, {cur[6], -1, tonumber(cur[7])}) end
    redis.call('HSET', k, 's', 'queued')
    redis.call('HINCRBY', k, 'a', -1)
    if cur[6] then
      flow_add(cur[6], id, ready_score(cur[5]))
    else
      redis.call('ZADD', P .. 'ready', ready_score(cur[5]), id)
    end
    table.insert(out, id); table.insert(out, 'queued')
  end
end
if #left > 0 then settle(left, now) end
-- Cancelled attempts whose worker died before reporting their end.
local gone = redis.call('ZRANGEBYSCORE', P .. 'held', '-inf', '(' .. now, 'LIMIT', 0, 1000)
if #gone > 0 then
  local held = {}
  for _, id in ipairs(gone) do table.insert(held, {id, false}) end
  if end_held(held, now) then freed = true end
end
if #out > 0 or freed then wake() end
return out
