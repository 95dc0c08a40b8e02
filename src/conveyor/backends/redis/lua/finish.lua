-- finish: apply the outcomes of attempts, each named by its claim token.
-- KEYS[1] queue prefix
-- ARGV[1] worker id
-- ARGV[2] JSON array of the outcomes that are not completions ('' when none): {id, token,
--         kind ('retry'|'failed'), null, error_json or null, retry_in seconds, brief_json (the
--         event data without the attempt) or null}, or for an await (park_attempt in
--         includes/awaiting.lua) {id, token, 'await', prompt_json, timeout_data_json or null,
--         timeout seconds (0: none), null, on_timeout, fan-out or null}; a fan-out (the
--         parent awaits its children, includes/fanin.lua fan_park) is {p: policy, x: cancel
--         siblings, c: [[child id, queue], ...]}
-- ARGV[3] completions without a result: 'id token id token ...' (one argument: cheaper to
--         send and to parse than three per job)
-- ARGV[4] hand-overs ('' when none): JSON object {job id: [[new job id, outbox entry], ...]}:
--         the jobs created with that job's outcome, written to this queue's outbox `out`
--         (new job id -> entry) only if the outcome applies; a forwarder enqueues each entry
--         into its target queue by its fixed id and then deletes it (outbox.py). The job keeps
--         the new ids (`nx`); its completed event carries them ({"next": [...]}).
-- ARGV[5..] completions with a result, three arguments each: id, token, result JSON
-- Completions cost one HMGET, one HSET and one XADD each; the sets and the rates are written
-- once per call. Failures go through fail_attempt (includes/attempt.lua), as lease recovery's
-- do.
-- Flow control: the gates of flow-controlled jobs get their slots back and breakers count the
-- outcome (completed jobs first, then the others, as the SQLite backend does); flows waiting
-- for a slot become claimable and blocked workers are woken.
-- Batches with callbacks: a member's final outcome counts in its batch part (batch_end); when a
-- part ends, '' is appended to the reply (the worker then checks the batch).
-- returns the ids of outcomes ignored because the token is not the job's current claim (lost)
local now = now_s()
local now_txt = fmt(now)
local lost = {}
local lost_held = {}  -- {id, token} of lost outcomes: a cancelled attempt may still hold slots
local woke = false
local left_ok, left_other = {}, {}
local done, ran = {}, 0
local started_at = {}  -- started text -> number: the jobs of one claim share it
local parts_ended = false
local handed = ARGV[4] ~= '' and cjson.decode(ARGV[4]) or nil
local function hand_over(id)
  local entries = handed and handed[id]
  if not entries then return nil end
  local ids = {}
  for _, e in ipairs(entries) do
    redis.call('HSET', P .. 'out', e[1], e[2])
    ids[#ids + 1] = e[1]
  end
  local list = cjson.encode(ids)
  redis.call('HSET', jkey(id), 'nx', list)
  return '{"next":' .. list .. '}'
end
local function complete(id, token, result)
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'tk', 't', 'tn', 'sa', 'fl', 'e', 'b', 'fq')
  if cur[1] ~= 'active' or cur[2] ~= token then
    lost[#lost + 1] = id
    lost_held[#lost_held + 1] = {id, token}
    return
  end
  done[#done + 1] = id
  local started = cur[5] and started_at[cur[5]]
  if not started then
    started = tonumber(cur[5] or now)
    if cur[5] then started_at[cur[5]] = started end
  end
  ran = ran + (now - started)
  if cur[6] then left_ok[#left_ok + 1] = {cur[6], 1, started} end
  if result then
    redis.call('HSET', k, 's', 'completed', 'fa', now_txt, 'r', result)
  else
    redis.call('HSET', k, 's', 'completed', 'fa', now_txt)
  end
  if cur[7] then redis.call('HDEL', k, 'e') end  -- an earlier attempt's error
  if cur[8] and batch_end(cur[8], 'completed') then parts_ended = true end
  event('completed', id, cur[3], cur[4], hand_over(id))
  if cur[9] then settle_edge(id, 'completed', result, nil) end  -- a fan-in child (fanin.lua)
end
for id, token in string.gmatch(ARGV[3], '(%S+) (%S+)') do complete(id, token, nil) end
for i = 5, #ARGV, 3 do complete(ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
if #done > 0 then
  many('ZREM', P .. 'active', done)
  local scored = {}
  for j, id in ipairs(done) do
    scored[2 * j - 1] = now_txt
    scored[2 * j] = id
  end
  many('ZADD', P .. 'f:completed', scored)
  bump_rate(now, 'c', #done)
  bump_rate(now, 'r', ran)
end
if ARGV[2] ~= '' then
  for _, o in ipairs(cjson.decode(ARGV[2])) do
    local id, token, kind = o[1], tostring(o[2]), o[3]
    local cur = redis.call('HMGET', jkey(id), 's', 'tk')
    if cur[1] ~= 'active' or cur[2] ~= token then
      lost[#lost + 1] = id
      lost_held[#lost_held + 1] = {id, token}
    elseif kind == 'await' then  -- includes/awaiting.lua
      park_attempt(id, o[4], o[5] ~= cjson.null and o[5] or nil, tonumber(o[6]) or 0, o[8],
                   now, left_other)
      if o[9] and o[9] ~= cjson.null then fan_park(id, o[9], now) end  -- includes/fanin.lua
      hand_over(id)
    else
      local err = o[5] ~= cjson.null and o[5] or nil
      local brief = o[7] ~= cjson.null and o[7] or '{}'
      if fail_attempt(id, kind, err, brief, tonumber(o[6]) or 0, now, left_other) then
        woke = true
      end
      hand_over(id)
    end
  end
end
if #lost_held > 0 and redis.call('EXISTS', P .. 'held') == 1 then
  if end_held(lost_held, now) then woke = true end
end
if #left_ok + #left_other > 0 then
  for _, l in ipairs(left_other) do table.insert(left_ok, l) end
  if settle(left_ok, now) then woke = true end
end
if woke then wake() end
if parts_ended or fail_parts_ended then table.insert(lost, '') end
return lost
