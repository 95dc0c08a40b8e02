-- enqueue: store jobs of one queue atomically.
-- KEYS[1] queue prefix
-- ARGV[1] JSON array of jobs: {id, task, payload, priority, max_attempts, max_stalls, timeout,
--         lease, delay, tenant, batch, workflow, parent, idempotency_key, flow or null,
--         meta JSON or null, step label or null, declared steps or null[, a fan-in child's
--         parent queue, its spawn index]}
-- ARGV[2] JSON object of the flows' gate rules {gate name: spec JSON}, or '' when no job has
--         a flow; a created job's gates are upserted (rule replaced, state kept)
-- ARGV[3] the queue's max_queued, or '' (unlimited): refused when the jobs it would create do
--         not fit (includes/backpressure.lua), unless ARGV[4] names a reservation admit.lua made
-- ARGV[4] the token of this call's reservation, or ''
-- ARGV[5..7] '' (the arguments of the tick prelude, cron.lua)
-- ARGV[8] members of a batch with callbacks: the deadline (Redis time) of the batch
--         reservation (badd.lua); refused after it ('BATCHLATE', nothing stored). Each created
--         job with a batch counts in its part `bp:<batch>` (includes/common.lua). '' otherwise
-- ARGV[9] batch callbacks: seconds a marker `once:<id>` keeps each created job's id after
--         it, so that the id is never stored again even once retention deleted the job ('')
-- Idempotency keys are per (queue, tenant): `idem:<tenant>` (`idem` without a tenant). A
-- tenant's jobs are also listed in `tn:<tenant>` (score 0: ids sort by creation time).
-- A job of a workflow is listed in `wf:<workflow>` (score 0), the per-queue workflow index.
-- A job whose id is stored already (a spool forwarder resending it) is not stored again.
-- returns {now, id1, created1, id2, created2, ...}; created is 1 or 0 (idempotency key matched,
-- or the id is stored already); error 'QUEUEFULL <count> <needed> <limit>' (nothing stored)
local jobs = cjson.decode(ARGV[1])
local now = now_s()
local parted = (ARGV[8] or '') ~= ''
if parted and now > tonumber(ARGV[8]) then return redis.error_reply('BATCHLATE') end
local once = tonumber(ARGV[9] or '')
local limit = tonumber(ARGV[3] or '')
if limit then
  local held = (ARGV[4] or '') ~= '' and rsv_drop(ARGV[4])
  local n = new_jobs(jobs, 10, 14, 1)
  if n > 0 then
    if not held then
      local count = waiting(now)
      if count + n > limit then return queue_full(count, n, limit) end
    end
    redis.call('SET', P .. 'maxq', limit)
  end
end
local now_txt = fmt(now)
local out = {now_txt}
local woke = false
local specs = ARGV[2] ~= '' and cjson.decode(ARGV[2]) or {}
local stored = {}  -- gates upserted by this call
local aside = {}   -- flow -> set aside? (cannot change during an enqueue)
local listed = {}  -- flow -> lowest score this call listed in `flows`
local flowed = 0
for _, j in ipairs(jobs) do
  local id, key = j[1], j[14]
  local tenant = j[10] ~= cjson.null and j[10] or nil
  local existing = false
  if redis.call('EXISTS', jkey(id)) == 1 or (once and redis.call('EXISTS', P .. 'once:' .. id) == 1) then
    existing = id
  elseif key ~= cjson.null then
    existing = idem_match(tenant, key)
  end
  if existing then
    table.insert(out, existing); table.insert(out, 0)
  else
    -- (attempt `a` and stalls `st` are absent until the first claim / stall: read as 0)
    local h = {'HSET', jkey(id), 't', j[2], 'p', j[3], 'pr', j[4], 'ma', j[5], 'ms', j[6],
               'l', j[8], 'c', now_txt}
    if j[7] ~= cjson.null then table.insert(h, 'to'); table.insert(h, j[7]) end
    local opt = {{'tn', j[10]}, {'b', j[11]}, {'wf', j[12]}, {'pa', j[13]}, {'ik', key},
                 {'m', j[16]}, {'sl', j[17] or cjson.null}, {'ns', j[18] or cjson.null},
                 {'fq', j[19] or cjson.null}, {'fi', j[20] or cjson.null}}
    for _, kv in ipairs(opt) do
      if kv[2] ~= cjson.null then table.insert(h, kv[1]); table.insert(h, kv[2]) end
    end
    local flow = j[15]
    if flow == cjson.null then flow = nil end
    if flow then
      table.insert(h, 'fl'); table.insert(h, flow)
      for _, name in ipairs(gate_names(flow)) do
        if not stored[name] and specs[name] then
          local gk = P .. 'g:' .. name
          local old = redis.call('HGET', gk, 'spec')
          redis.call('HSET', gk, 'spec', specs[name])
          if old and old ~= specs[name] and redis.call('HEXISTS', gk, 'waiters') == 1 then
            -- A changed rule (a raised cap, say) may admit the flows waiting on the old one.
            for _, f in ipairs(redis.call('SMEMBERS', P .. 'fw:' .. name)) do
              if redis.call('HGET', FWAIT, f) == name then
                redis.call('HDEL', FWAIT, f)
                flow_sync(f)
              end
            end
            redis.call('DEL', P .. 'fw:' .. name)
            redis.call('HDEL', gk, 'waiters')
            aside = {}
          end
          redis.call('ZADD', P .. 'gates', 0, name)
          stored[name] = true
        end
      end
    end
    local delay = tonumber(j[9])
    if delay > 0 then
      local due = now + delay
      table.insert(h, 's'); table.insert(h, 'scheduled')
      table.insert(h, 'sf'); table.insert(h, fmt(due))
      redis.call(unpack(h))
      redis.call('ZADD', P .. 'sched', due, id)
      event('scheduled', id, j[2], tenant, '{"due":' .. fmt(due) .. '}')
    else
      table.insert(h, 's'); table.insert(h, 'queued')
      redis.call(unpack(h))
      if flow then
        if aside[flow] == nil then aside[flow] = flow_aside(flow) end
        local score = ready_score(j[4])
        if redis.call('ZADD', fqkey(flow), score, id) == 1 then flowed = flowed + 1 end
        if not aside[flow] and (listed[flow] == nil or score < listed[flow]) then
          redis.call('ZADD', FLOWS, 'LT', score, flow)  -- the head is the lowest score
          listed[flow] = score
        end
      else
        redis.call('ZADD', P .. 'ready', ready_score(j[4]), id)
      end
      event('enqueued', id, j[2], tenant, nil)
    end
    if key ~= cjson.null then redis.call('HSET', idem_key(tenant), key, id) end
    if tenant then redis.call('ZADD', P .. 'tn:' .. tenant, 0, id) end
    if j[12] ~= cjson.null then redis.call('ZADD', P .. 'wf:' .. j[12], 0, id) end
    if j[11] ~= cjson.null then
      redis.call('SADD', P .. 'b:' .. j[11], id)
      if parted then redis.call('HINCRBY', P .. 'bp:' .. j[11], 'n', 1) end
    end
    if once then redis.call('SET', P .. 'once:' .. id, 1, 'EX', math.ceil(once)) end
    table.insert(out, id); table.insert(out, 1)
    woke = true
  end
end
if flowed > 0 then redis.call('INCRBY', FQN, flowed) end
if woke then wake() end
-- The event log's cap while no worker trims it (producers alone): one XLEN per call, and a
-- tracked trim (never XADD MAXLEN, whose cut no reader could learn) every EVENTS_SLACK events.
if redis.call('XLEN', P .. 'events') > EVENTS_CAP + EVENTS_SLACK then
  trim_stream(EVENTS_CAP, '', 1000)
end
return out
