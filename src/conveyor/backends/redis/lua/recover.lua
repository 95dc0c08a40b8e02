-- recover: requeue jobs whose lease expired (a stall; the attempt is not charged) or fail them
-- when their stalls are used up.
-- KEYS[1] queue prefix
-- Flow control: a dead worker's jobs give their gates' slots back (no breaker verdict).
-- returns flat {id, new_status, ...}
local now = now_s()
local expired = redis.call('ZRANGEBYSCORE', P .. 'active', '-inf', '(' .. now, 'LIMIT', 0, 1000)
local out = {}
local left = {}
for _, id in ipairs(expired) do
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 'st', 'ms', 'a', 't', 'tn', 'pr', 'fl', 'sa')
  local stalls = tonumber(cur[1] or 0) + 1
  redis.call('ZREM', P .. 'active', id)
  redis.call('HDEL', k, 'le', 'w')
  if cur[7] then table.insert(left, {cur[7], -1, tonumber(cur[8])}) end
  event('stalled', id, cur[4], cur[5], '{"stalls":' .. stalls .. '}')
  if stalls > tonumber(cur[2]) then
    local err = cjson.encode({type = 'Stalled', message = 'lease expired ' .. stalls ..
      ' times (max_stalls=' .. cur[2] .. '): the worker died or blocked its event loop'})
    redis.call('HSET', k, 's', 'failed', 'st', stalls, 'e', err, 'fa', fmt(now))
    redis.call('ZADD', P .. 'f:failed', now, id)
    event('failed', id, cur[4], cur[5], '{"attempt":' .. cur[3] .. ',"error":' .. err .. '}')
    table.insert(out, id); table.insert(out, 'failed')
  else
    redis.call('HSET', k, 's', 'queued', 'st', stalls)
    redis.call('HINCRBY', k, 'a', -1)
    if cur[7] then
      flow_add(cur[7], id, ready_score(cur[6]))
    else
      redis.call('ZADD', P .. 'ready', ready_score(cur[6]), id)
    end
    table.insert(out, id); table.insert(out, 'queued')
  end
end
if #left > 0 then settle(left, now) end
if #out > 0 then wake() end
return out
