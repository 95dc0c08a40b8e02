-- claim: promote due scheduled jobs, then move up to N ready jobs to active under a lease.
-- Flow control: unlimited jobs (`ready`) and the heads of claimable flows (`flows`) are merged
-- in score order (priority, then FIFO); a flow gives as many jobs as its gates allow, a flow a
-- gate refuses is set aside (`fblk` until a time, `fwait` until a slot frees). A queue without
-- flows costs one EXISTS more than a plain ZPOPMIN.
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] limit (already capped for this queue)
-- returns {now, next_due or '', n, job1 id, job1 fields (flat HGETALL), ...}; next_due (when
-- fewer than limit were claimed) is the first scheduled due time or set-aside flow's release,
-- or now when the claim stopped after MAX_REFUSED refusals (claim again at once)
local MAX_REFUSED = 64
local READY = P .. 'ready'
local worker, limit = ARGV[1], tonumber(ARGV[2])
local now = now_s()
local due = redis.call('ZRANGEBYSCORE', P .. 'sched', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'pr', 'fl')
  if f[2] then
    flow_add(f[2], id, ready_score(f[1]))
  else
    redis.call('ZADD', READY, ready_score(f[1]), id)
  end
  redis.call('HSET', k, 's', 'queued')
  redis.call('HDEL', k, 'sf')
end
if #due > 0 then redis.call('ZREM', P .. 'sched', unpack(due)) end

local out = {fmt(now), '', 0}
local n = 0
local function start(id)
  local k = jkey(id)
  local lease = tonumber(redis.call('HGET', k, 'l'))
  local expires = now + lease
  redis.call('HINCRBY', k, 'a', 1)
  redis.call('HINCRBY', k, 'tk', 1)  -- the claim token: never lowered
  redis.call('HSET', k, 's', 'active', 'sa', fmt(now), 'le', fmt(expires), 'w', worker)
  redis.call('HDEL', k, 'pg')
  redis.call('ZADD', P .. 'active', expires, id)
  local job = redis.call('HGETALL', k)
  local f = {}
  for x = 1, #job, 2 do f[job[x]] = job[x + 1] end
  event('started', id, f['t'], f['tn'], '{"attempt":' .. f['a'] .. '}')
  table.insert(out, id)
  table.insert(out, job)
  n = n + 1
end

-- Flows whose set-aside time passed are claimable again (unless waiting on a slot).
local has_flows = redis.call('EXISTS', FLOWS, FBLK) > 0
if has_flows then
  local free = redis.call('ZRANGEBYSCORE', FBLK, '-inf', now, 'LIMIT', 0, 1000)
  if #free > 0 then
    redis.call('ZREM', FBLK, unpack(free))
    for _, flow in ipairs(free) do flow_sync(flow) end
  end
end

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
out[3] = n
if n < limit then
  if truncated then
    out[2] = fmt(now)
  else
    local first = redis.call('ZRANGE', P .. 'sched', 0, 0, 'WITHSCORES')
    local next_due = first[2] and tonumber(first[2])
    if has_flows then
      -- The earliest release of a set-aside flow with ready jobs and no slot to wait for
      -- (sqlite: next_permitted); past a few skipped entries, the next score is a safe bound.
      local blk = redis.call('ZRANGE', FBLK, 0, 7, 'WITHSCORES')
      for i = 1, #blk, 2 do
        local at = tonumber(blk[i + 1])
        if i == 15 or (redis.call('HEXISTS', FWAIT, blk[i]) == 0
            and redis.call('EXISTS', fqkey(blk[i])) == 1) then
          if not next_due or at < next_due then next_due = at end
          break
        end
      end
    end
    if next_due then out[2] = num(next_due) end
  end
elseif redis.call('ZCARD', READY) > 0 or (has_flows and redis.call('ZCARD', FLOWS) > 0) then
  wake()  -- more is ready than we took: let another blocked worker have it
end
return out
