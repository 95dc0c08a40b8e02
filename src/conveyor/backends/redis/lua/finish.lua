-- finish: apply the outcomes of attempts, each named by its claim token.
-- KEYS[1] queue prefix
-- ARGV[1] worker id
-- ARGV[2] JSON array of outcomes: {id, token, kind ('completed'|'retry'|'failed'),
--         result_json or null, error_json or null, retry_in seconds, brief_json (the event
--         data without the attempt) or null}
-- Failures go through fail_attempt (includes/attempt.lua), as lease recovery's do.
-- Flow control: the gates of flow-controlled jobs get their slots back and breakers count the
-- outcome (completed jobs first, then the others, as the SQLite backend does); flows waiting
-- for a slot become claimable and blocked workers are woken.
-- returns the ids of outcomes ignored because the token is not the job's current claim (lost)
local outcomes = cjson.decode(ARGV[2])
local now = now_s()
local lost = {}
local woke = false
local left_ok, left_other = {}, {}
for _, o in ipairs(outcomes) do
  local id, token, kind = o[1], tostring(o[2]), o[3]
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'tk', 't', 'tn', 'sa', 'fl')
  if cur[1] ~= 'active' or cur[2] ~= token then
    table.insert(lost, id)
  elseif kind == 'completed' then
    redis.call('ZREM', P .. 'active', id)
    redis.call('HDEL', k, 'le', 'e')
    if cur[6] then table.insert(left_ok, {cur[6], 1, tonumber(cur[5])}) end
    redis.call('HSET', k, 's', 'completed', 'fa', fmt(now))
    if o[4] ~= cjson.null then redis.call('HSET', k, 'r', o[4]) end
    redis.call('ZADD', P .. 'f:completed', now, id)
    bump_rate(now, 'c', 1)
    bump_rate(now, 'r', now - tonumber(cur[5] or now))
    event('completed', id, cur[3], cur[4], nil)
  else
    local err = o[5] ~= cjson.null and o[5] or nil
    local brief = o[7] ~= cjson.null and o[7] or '{}'
    if fail_attempt(id, kind, err, brief, tonumber(o[6]) or 0, now, left_other) then woke = true end
  end
end
if #lost > 0 and redis.call('EXISTS', P .. 'held') == 1 then
  local held = {}
  for _, o in ipairs(outcomes) do table.insert(held, {o[1], o[2]}) end
  if end_held(held, now) then woke = true end
end
if #left_ok + #left_other > 0 then
  for _, l in ipairs(left_other) do table.insert(left_ok, l) end
  if settle(left_ok, now) then woke = true end
end
if woke then wake() end
return lost
