-- finish: apply outcomes of attempts held by one worker.
-- KEYS[1] queue prefix
-- ARGV[1] worker id
-- ARGV[2] JSON array of outcomes: {id, attempt, kind ('completed'|'retry'|'failed'),
--         result_json or null, error_json or null, retry_in seconds, error_brief_json}
-- Flow control: the gates of flow-controlled jobs get their slots back and breakers count the
-- outcome (completed jobs first, then the others, as the SQLite backend does); flows waiting
-- for a slot become claimable and blocked workers are woken.
-- returns the ids of outcomes ignored because the attempt is no longer held (lost)
local worker = ARGV[1]
local outcomes = cjson.decode(ARGV[2])
local now = now_s()
local lost = {}
local woke = false
local left_ok, left_other = {}, {}
for _, o in ipairs(outcomes) do
  local id, attempt, kind = o[1], tostring(o[2]), o[3]
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'a', 'w', 't', 'tn', 'sa', 'fl')
  if cur[1] ~= 'active' or cur[2] ~= attempt or cur[3] ~= worker then
    table.insert(lost, id)
  else
    redis.call('ZREM', P .. 'active', id)
    redis.call('HDEL', k, 'le')
    local task, tenant, flow = cur[4], cur[5], cur[7]
    if flow then
      table.insert(kind == 'completed' and left_ok or left_other, {flow, kind == 'completed' and 1 or 0, tonumber(cur[6])})
    end
    if kind == 'completed' then
      redis.call('HSET', k, 's', 'completed', 'fa', fmt(now))
      redis.call('HDEL', k, 'e')
      if o[4] ~= cjson.null then redis.call('HSET', k, 'r', o[4]) end
      redis.call('ZADD', P .. 'f:completed', now, id)
      bump_rate(now, 'c', 1)
      bump_rate(now, 'r', now - tonumber(cur[6] or now))
      event('completed', id, task, tenant, nil)
    elseif kind == 'retry' then
      local delay = tonumber(o[6])
      if o[5] ~= cjson.null then redis.call('HSET', k, 'e', o[5]) end
      redis.call('HDEL', k, 'w')
      if delay > 0 then
        redis.call('HSET', k, 's', 'scheduled', 'sf', fmt(now + delay))
        redis.call('ZADD', P .. 'sched', now + delay, id)
      else
        redis.call('HSET', k, 's', 'queued')
        local score = ready_score(redis.call('HGET', k, 'pr'))
        if flow then
          flow_add(flow, id, score)
        else
          redis.call('ZADD', P .. 'ready', score, id)
        end
        woke = true
      end
      bump_rate(now, 'f', 1)
      event('retrying', id, task, tenant, o[7])
    else
      redis.call('HSET', k, 's', 'failed', 'fa', fmt(now))
      if o[5] ~= cjson.null then redis.call('HSET', k, 'e', o[5]) end
      redis.call('ZADD', P .. 'f:failed', now, id)
      bump_rate(now, 'f', 1)
      event('failed', id, task, tenant, o[7])
    end
  end
end
if #left_ok + #left_other > 0 then
  for _, l in ipairs(left_other) do table.insert(left_ok, l) end
  if settle(left_ok, now) then woke = true end
end
if woke then wake() end
return lost
