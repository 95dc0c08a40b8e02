-- Human in the loop, prepended (after common.lua and flow.lua) to finish.lua, resume.lua and
-- expire.lua (sqlite: backends/sqlite/awaiting.py). An awaiting job is in no active set (no
-- lease: recovery never sees it) but in `await`, scored by its deadline ('+inf': none), which
-- is both the state set (stats, listing) and the sweep's index. Job hash fields: ap prompt
-- (JSON), ao on_timeout, aa the data a timeout resumes with (JSON), ad deadline (while
-- awaiting), ai the last resume's decision (JSON), ar the number of resumes.
local AWAIT = P .. 'await'

-- An attempt parks its job (the handler returned AwaitInput): awaiting, lease and worker
-- dropped, its gates' slots given back with no breaker verdict (``left`` collects {flow, -1,
-- started} for `settle`), an `awaiting` event. timeout: seconds, 0 for none.
local function park_attempt(id, prompt, data, timeout, policy, now, left)
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 't', 'tn', 'fl', 'sa', 'a')
  redis.call('ZREM', P .. 'active', id)
  redis.call('HDEL', k, 'le', 'w')
  if cur[3] then table.insert(left, {cur[3], -1, tonumber(cur[4])}) end
  redis.call('HSET', k, 's', 'awaiting', 'ap', prompt, 'ao', policy)
  if data then redis.call('HSET', k, 'aa', data) else redis.call('HDEL', k, 'aa') end
  local deadline = 'null'
  if timeout > 0 then
    deadline = fmt(now + timeout)
    redis.call('HSET', k, 'ad', deadline)
    redis.call('ZADD', AWAIT, deadline, id)
  else
    redis.call('HDEL', k, 'ad')
    redis.call('ZADD', AWAIT, '+inf', id)
  end
  event('awaiting', id, cur[1], cur[2], '{"attempt":' .. (cur[5] or '0') .. ',"deadline":' ..
        deadline .. ',"on_timeout":' .. cjson.encode(policy) .. '}')
end

-- An awaiting job resumes: queued (a new place in its line) with the decision ``data`` (JSON
-- or nil), one more resume, the attempt that awaited given back, a `resumed` event (data
-- {"reason": reason} when reason is given), idle workers woken. The caller checked the state.
local function resume_job(id, data, now, reason)
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 't', 'tn', 'pr', 'fl')
  redis.call('ZREM', AWAIT, id)
  redis.call('HSET', k, 's', 'queued', 'sf', fmt(now))  -- sf: when it became ready
  redis.call('HDEL', k, 'ad')
  if data then redis.call('HSET', k, 'ai', data) else redis.call('HDEL', k, 'ai') end
  redis.call('HINCRBY', k, 'ar', 1)
  redis.call('HINCRBY', k, 'a', -1)
  local score = ready_score(cur[3])
  if cur[4] then flow_add(cur[4], id, score) else redis.call('ZADD', P .. 'ready', score, id) end
  event('resumed', id, cur[1], cur[2], reason and ('{"reason":"' .. reason .. '"}') or '{}')
  wake()
end
