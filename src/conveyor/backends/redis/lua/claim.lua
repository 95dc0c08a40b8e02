-- claim: promote due scheduled jobs, then move up to N ready jobs to active under a lease.
-- Flow control: unlimited jobs (`ready`) and the heads of claimable flows (`flows`) are merged
-- in score order (priority, then FIFO); a flow gives as many jobs as its gates allow, a flow a
-- gate refuses is set aside (`fblk` until a time, `fwait` until a slot frees). A queue without
-- flows costs one EXISTS more than a plain ZPOPMIN.
-- A worker serving several queues merges them with peek.lua first, then claims each queue's
-- share with this script (see attempts.py).
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] limit (already capped for this queue)
-- ARGV[3] '' or a stream id the claim's first event must sort after (the newest event of the
--         worker's previous claim: its claims across queues show in the log in claim order)
-- returns {now, next_due or '', n, newest event id or '', job1 id, job1 fields (the CLAIMED
-- fields of includes/claiming.lua by position, nil when absent, `a` and `tk` after the
-- claim), ..., then the number of flows a rate gate held back when > 0}; the worker sets status active, started now, its own id, the lease's expiry
-- (now + lease) and no progress (codec.job_from_claim). next_due (when fewer
-- than limit were claimed) is the first scheduled due time or set-aside flow's release, or
-- now when the claim stopped after MAX_REFUSED refusals (claim again at once)
local MAX_REFUSED = 64
local worker, limit = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then event_after = ARGV[3] end
local now = now_s()
promote_due(now)

local now_txt = fmt(now)
local out = {now_txt, '', 0, ''}
-- A paused queue (pause.lua) gives nothing and no due time: its resume wakes the workers.
if redis.call('EXISTS', P .. 'paused') == 1 then return out end
local n = 0
-- Score, id pairs for one ZADD to `active`. The first pair is the set's keeper (member '',
-- never expires): a worker's acknowledgements often empty the set just before its next claim
-- fills it again, and a set that is deleted and made again each round costs ~1 us per job
-- (a new hash table grown by rehashing, a listpack converted).
local expiring = {'+inf', ''}
-- Number <-> text conversions cost (strtod, printf) and the jobs of one claim mostly share
-- their lease and counts: each distinct text is converted once per claim.
local expiry_of = {}  -- lease text -> expiry text
local next_of = {}  -- counter text -> the next one
local function plus_one(x)
  local y = next_of[x]
  if not y then
    y = string.format('%d', tonumber(x) + 1)
    next_of[x] = y
  end
  return y
end
-- Per job: one HGETALL (cheaper than an HMGET of every field the worker needs: most are
-- absent, and each absent field is a scan of the hash), one HSET, one XADD; the lease's expiry
-- is the job's score in `active`, not a hash field. The worker gets the fields it needs by
-- position (CLAIMED), so it builds no dict per job.
local function start(id)
  local k = jkey(id)
  local h = redis.call('HGETALL', k)
  local v = {false, false, false, false, false, false, false, false, false, false, false,
             false, false, false, false, false, false, false, false, false, false, false}
  local pg = false
  for x = 1, #h, 2 do
    local i = CLAIMED[h[x]]
    if i then v[i] = h[x + 1] elseif h[x] == 'pg' then pg = true end
  end
  local a = v[C_A] and plus_one(v[C_A]) or '1'
  local tk = v[C_TK] and plus_one(v[C_TK]) or '1'  -- the claim token: never lowered
  redis.call('HSET', k, 's', 'active', 'sa', now_txt, 'w', worker, 'a', a, 'tk', tk)
  if pg then redis.call('HDEL', k, 'pg') end
  local lease = v[C_L]
  local expires = expiry_of[lease]
  if not expires then
    expires = num(now + tonumber(lease))
    expiry_of[lease] = expires
  end
  expiring[#expiring + 1] = expires
  expiring[#expiring + 1] = id
  event('started', id, v[C_T], v[C_TN], '{"attempt":' .. a .. '}')
  v[C_A], v[C_TK] = a, tk
  out[#out + 1] = id
  out[#out + 1] = v
  n = n + 1
end

local has_flows = release_flows(now)
local limited = 0  -- flows a rate gate held back (returned after the jobs when > 0)

-- The flow's allowance; when 0 it is set aside (sqlite: FlowClaim._allowance).
local function allowance(flow)
  local allowed, till, wait, rate_gate = UNLIMITED, nil, nil, nil
  for _, name in ipairs(gate_names(flow)) do
    local g = gate(name)
    if g then  -- a gate without a stored rule (cannot happen: stored at enqueue) is no limit
      local a, at, waits = gate_allowance(g, now)
      if a < allowed then allowed = a end
      if a == 0 then
        if waits then
          wait = name
        elseif at and (till == nil or at > till) then
          till = at
          if g.spec['k'] == 'rate' then rate_gate = name end
        end
      end
    end
  end
  if allowed > 0 then return allowed end
  if till == nil and wait == nil then till = now end  -- never leave a refused flow listed
  redis.call('ZREM', FLOWS, flow)
  if till then redis.call('ZADD', FBLK, till, flow) end
  if wait then wait_on(flow, wait) end
  if rate_gate and not wait then
    limited = limited + 1
    event('rate_limited', nil, task_of(rate_gate), nil,
      '{"gate":' .. cjson.encode(rate_gate) .. ',"until":' .. num(till) .. '}')
  end
  return 0
end

local truncated = false
if has_flows and redis.call('EXISTS', FLOWS) == 1 then
  local taken = {}
  local remaining = limit
  local refused = 0
  local from_flows = 0
  local ubest = nil  -- the best unlimited score (false: none), read again after taking some
  local function take(ids)
    for _, id in ipairs(ids) do table.insert(taken, id) end
    remaining = remaining - #ids
  end
  while remaining > 0 do
    local heads = redis.call('ZRANGE', FLOWS, 0, 1, 'WITHSCORES')
    if #heads == 0 then  -- no claimable flow left: the rest from the unlimited jobs
      local ids = redis.call('ZRANGE', READY, 0, remaining - 1)
      if #ids > 0 then redis.call('ZREM', READY, unpack(ids)) end
      take(ids)
      break
    end
    local flow, head = heads[1], tonumber(heads[2])
    if ubest == nil then
      local u = redis.call('ZRANGE', READY, 0, 0, 'WITHSCORES')
      ubest = u[2] and tonumber(u[2]) or false
    end
    if ubest and ubest < head then  -- unlimited jobs first, up to the flow's head
      local ids = redis.call('ZRANGEBYSCORE', READY, '-inf', '(' .. sc(head), 'LIMIT', 0, remaining)
      redis.call('ZREM', READY, unpack(ids))
      take(ids)
      ubest = nil
    else
      local allowed = allowance(flow)
      if allowed == 0 then
        refused = refused + 1
        if refused >= MAX_REFUSED then truncated = true; break end
      else
        -- Take up to `want` of its jobs scoring below the next candidate; the first one not
        -- taken is the flow's new head (read in the same range).
        local below = ubest or nil
        if heads[4] and (not below or tonumber(heads[4]) < below) then below = tonumber(heads[4]) end
        local want = math.min(allowed, remaining)
        local rows = redis.call('ZRANGE', fqkey(flow), 0, want, 'WITHSCORES')
        local ids, new_head = {}, nil
        for i = 1, #rows, 2 do
          if #ids < want and (not below or tonumber(rows[i + 1]) < below) then
            table.insert(ids, rows[i])
          else
            new_head = rows[i + 1]
            break
          end
        end
        if #ids > 0 then
          redis.call('ZREM', fqkey(flow), unpack(ids))
          from_flows = from_flows + #ids
          for _, name in ipairs(gate_names(flow)) do
            local g = gate(name)
            if g then gate_charge(g, #ids, now) end
          end
          take(ids)
        end
        -- The flow was claimable, so it stays listed while it has ready jobs (a stale head is
        -- corrected here too).
        if new_head then redis.call('ZADD', FLOWS, new_head, flow)
        else redis.call('ZREM', FLOWS, flow) end
      end
    end
  end
  if from_flows > 0 then redis.call('DECRBY', FQN, from_flows) end
  gates_save()
  for _, id in ipairs(taken) do start(id) end
else
  for i, id in ipairs(redis.call('ZPOPMIN', READY, limit)) do
    if i % 2 == 1 then start(id) end
  end
end
if n > 0 then many('ZADD', P .. 'active', expiring) end
out[3] = n
if n < limit then
  if truncated then
    out[2] = fmt(now)
  else
    out[2] = next_due(has_flows)
  end
elseif redis.call('ZCARD', READY) > 0 or (has_flows and redis.call('ZCARD', FLOWS) > 0) then
  wake()  -- more is ready than we took: let another blocked worker have it
end
if last_event then out[4] = last_event end
if limited > 0 then out[#out + 1] = limited end
return out
