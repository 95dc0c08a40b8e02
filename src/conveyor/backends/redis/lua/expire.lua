-- expire: apply on_timeout to the awaiting jobs whose deadline passed (human in the loop):
-- 'fail' (failed, error type AwaitTimeout), 'cancel' (cancelled) or 'resume' (queued with the
-- stored data as the decision); each event's data says reason "timeout". Reads only the expired
-- jobs (`await` is scored by deadline), up to 1000 per call.
-- KEYS[1] queue prefix
-- returns flat {id, new_status, ...}
local now = now_s()
local due = redis.call('ZRANGEBYSCORE', AWAIT, '-inf', now, 'LIMIT', 0, 1000)
local out = {}
for _, id in ipairs(due) do
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'ao', 'aa', 't', 'tn', 'a')
  if cur[1] ~= 'awaiting' then
    redis.call('ZREM', AWAIT, id)  -- not awaiting (never left behind by a transition)
  elseif cur[2] == 'resume' then
    resume_job(id, cur[3] or nil, now, 'timeout')
    table.insert(out, id); table.insert(out, 'queued')
  else
    redis.call('ZREM', AWAIT, id)
    redis.call('HDEL', k, 'ad')
    local state = cur[2] == 'cancel' and 'cancelled' or 'failed'
    redis.call('HSET', k, 's', state, 'fa', fmt(now))
    redis.call('ZADD', P .. 'f:' .. state, now, id)
    if state == 'cancelled' then
      event('cancelled', id, cur[4], cur[5], '{"from":"awaiting","reason":"timeout"}')
      settle_edge(id, 'cancelled', nil, nil)
    else
      local err = cjson.encode({type = 'AwaitTimeout', message =
        "no input arrived by the deadline (on_timeout='" .. tostring(cur[2]) .. "')"})
      redis.call('HSET', k, 'e', err)
      event('failed', id, cur[4], cur[5], '{"attempt":' .. (cur[6] or '0') .. ',"error":' ..
            err .. ',"reason":"timeout"}')
      settle_edge(id, 'failed', nil, err)
    end
    table.insert(out, id); table.insert(out, state)
  end
end
return out
