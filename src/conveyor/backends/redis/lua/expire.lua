-- expire: apply on_timeout to the awaiting jobs whose deadline passed (human in the loop):
-- 'fail' (failed, error type AwaitTimeout), 'cancel' (cancelled) or 'resume' (queued with the
-- stored data as the decision); each event's data says reason "timeout". Reads only the expired
-- jobs (`await` is scored by deadline), up to 1000 per call.
-- Batches with callbacks: a member that times out into failed or cancelled has ended; it counts
-- in its batch part (batch_end, as cancel and finish do), and a part that ends is listed in
-- `bdirty` in this script; then '' is appended to the reply (the caller checks the batches).
-- An awaiting member had not ended; one resumed by its timeout has not either.
-- KEYS[1] queue prefix
-- returns flat {id, new_status, ...}, then '' when a batch part ended
local now = now_s()
local due = redis.call('ZRANGEBYSCORE', AWAIT, '-inf', now, 'LIMIT', 0, 1000)
local out = {}
local parts_ended = false
for _, id in ipairs(due) do
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'ao', 'aa', 't', 'tn', 'a', 'b')
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
    if cur[7] and batch_end(cur[7], state) then parts_ended = true end
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
if parts_ended then table.insert(out, '') end
return out
