-- Flow control helpers, prepended (after common.lua) to the scripts that move flow-controlled
-- jobs. They mirror backends/sqlite/flow.py (GateRow, settle, FlowClaim._allowance); see
-- docs/architecture.md "Flow control" for the model and the Redis key layout.
--   g:<gate>   hash   spec (JSON rule), tat, active, state, fails, until, probe, wstart,
--                     wcalls, wfails (absent fields: initial state); waiters = 1 while flows
--                     may wait on it (settle looks at fw:<gate> only then)
--   gates      zset   gate names, score 0 (stats lists them by name)
--   fq:<flow>  zset   ready jobs of one flow, scored like `ready`
--   flows      zset   claimable flows (ready jobs, not set aside) by head job score
--   fblk       zset   flows set aside until a time (rate gate, open breaker)
--   fwait      hash   flow -> the full concurrency / busy breaker gate it waits on
--   fw:<gate>  set    flows waiting on that gate
--   fqn        string number of ready jobs in all fq:<flow> (stats: queued = ZCARD ready + fqn)
local UNLIMITED = 1073741824
local FLOWS, FBLK, FWAIT, FQN = P .. 'flows', P .. 'fblk', P .. 'fwait', P .. 'fqn'
local function fqkey(flow) return P .. 'fq:' .. flow end
-- Exact text of a float (times, tat) and of a ready score (an integer < 2^53). Lua's own
-- tostring keeps only 14 digits.
local function num(x) return string.format('%.17g', x) end
local function sc(x) return string.format('%.0f', x) end

local names_of = {}
local function gate_names(flow)
  local n = names_of[flow]
  if not n then n = cjson.decode(flow); names_of[flow] = n end
  return n
end

-- ``rate:task:enrich[k=v]`` -> ``enrich`` (events); nil for queue or named gates.
local function task_of(name)
  local c = string.find(name, ':', 1, true)
  if not c then return nil end
  local rest = string.sub(name, c + 1)
  if string.sub(rest, 1, 5) ~= 'task:' then return nil end
  local t = string.sub(rest, 6)
  local b = string.find(t, '[', 1, true)
  if b then t = string.sub(t, 1, b - 1) end
  return t
end

-- -- flows: the `flows` index ----------------------------------------------------------------

local function flow_aside(flow)
  return redis.call('ZSCORE', FBLK, flow) or redis.call('HEXISTS', FWAIT, flow) == 1
end

-- A flow's ready jobs or set-aside state changed: list it in `flows` by its head score iff it
-- has ready jobs and is not set aside (sqlite: refresh_heads + the flows_ready condition).
-- ``aside``: false when the caller knows the flow is not set aside, nil to look it up.
local function flow_sync(flow, aside)
  if aside == nil then aside = flow_aside(flow) end
  if aside then
    redis.call('ZREM', FLOWS, flow)
    return
  end
  local first = redis.call('ZRANGE', fqkey(flow), 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', FLOWS, flow)
  else
    redis.call('ZADD', FLOWS, first[2], flow)
  end
end

-- A job became ready in its flow. ``aside``: the caller knows the flow's set-aside state
-- (true/false), or nil to look it up.
local function flow_add(flow, id, score, aside)
  if redis.call('ZADD', fqkey(flow), score, id) == 1 then redis.call('INCR', FQN) end
  if aside == nil then aside = flow_aside(flow) end
  if not aside then
    redis.call('ZADD', FLOWS, 'LT', score, flow)  -- the head is the lowest score
  end
end

-- A ready job left its flow without being claimed (cancel).
local function flow_remove(flow, id)
  if redis.call('ZREM', fqkey(flow), id) == 1 then redis.call('DECR', FQN) end
  flow_sync(flow)
end

-- -- gates ------------------------------------------------------------------------------------

local gate_rows = {}  -- name -> gate table, or false when not stored; loaded once per script
local gate_order = {}

local function gate(name)
  local g = gate_rows[name]
  if g == nil then
    local v = redis.call('HMGET', P .. 'g:' .. name, 'spec', 'tat', 'active', 'state', 'fails',
      'until', 'probe', 'wstart', 'wcalls', 'wfails', 'waiters')
    if not v[1] then
      g = false
    else
      g = {name = name, spec = cjson.decode(v[1]), tat = tonumber(v[2]) or 0,
           active = tonumber(v[3]) or 0, state = v[4] or 'closed', fails = tonumber(v[5]) or 0,
           ['until'] = tonumber(v[6]), probe = tonumber(v[7]) or 0, wstart = tonumber(v[8]) or 0,
           wcalls = tonumber(v[9]) or 0, wfails = tonumber(v[10]) or 0, waiters = v[11] == '1',
           dirty = false}
      table.insert(gate_order, name)
    end
    gate_rows[name] = g
  end
  return g
end

local function gates_save()
  for _, name in ipairs(gate_order) do
    local g = gate_rows[name]
    local k = g.spec['k']
    if g.dirty and k == 'rate' then  -- a rate gate changes only its tat
      redis.call('HSET', P .. 'g:' .. name, 'tat', num(g.tat))
      g.dirty = false
    elseif g.dirty and k == 'conc' then  -- a concurrency gate only its active count
      redis.call('HSET', P .. 'g:' .. name, 'active', g.active)
      g.dirty = false
    elseif g.dirty then
      local k = P .. 'g:' .. name
      redis.call('HSET', k, 'tat', num(g.tat), 'active', g.active, 'state', g.state,
        'fails', g.fails, 'probe', g.probe, 'wstart', num(g.wstart), 'wcalls', g.wcalls,
        'wfails', g.wfails)
      if g['until'] then redis.call('HSET', k, 'until', num(g['until']))
      else redis.call('HDEL', k, 'until') end
      g.dirty = false
    end
  end
end

-- GCRA (limits.gcra): starts allowed now, or 0 and the time the next one is.
local function gcra(tat, now, interval, burst)
  local tau = (burst - 1) * interval
  local base = math.max(tat, now)
  if base - tau > now + 1e-9 then return 0, base - tau end
  return math.floor((now + tau - base) / interval + 1e-9) + 1, now
end

-- (starts allowed now, time when one may be allowed if none, wait for a slot)
local function gate_allowance(g, now)
  local k = g.spec['k']
  if k == 'rate' then
    local n, at = gcra(g.tat, now, g.spec['i'], g.spec['b'])
    if n == 0 then return 0, at, false end
    return n, nil, false
  elseif k == 'conc' then
    local free = tonumber(g.spec['n']) - g.active
    if free > 0 then return free, nil, false end
    return 0, nil, true
  elseif k == 'breaker' then
    if g.state == 'open' then
      if now < (g['until'] or 0) then return 0, g['until'], false end
      g.state, g.probe, g.dirty = 'half', 0, true
    end
    if g.state == 'half' then
      if g.probe == 0 then return 1, nil, false end
      return 0, nil, true
    end
  end
  return UNLIMITED, nil, false
end

local function gate_charge(g, n, now)
  local k = g.spec['k']
  if k == 'rate' then
    g.tat = math.max(g.tat, now) + n * g.spec['i']
  elseif k == 'conc' then
    g.active = g.active + n
  elseif k == 'breaker' and g.state == 'half' then
    g.probe = g.probe + n
  else
    return
  end
  g.dirty = true
end

-- A job that passed this gate left `active`: free its slot; a breaker counts the attempt
-- (outcome true ok, false failed, nil no verdict). Returns the event to emit, if any.
local function gate_settle(g, outcome, now, started)
  local k = g.spec['k']
  if k == 'conc' then
    g.active = math.max(0, g.active - 1)
    g.dirty = true
    return nil
  end
  if k ~= 'breaker' then return nil end
  g.dirty = true
  local spec = g.spec
  if g.state == 'half' then
    -- Only the probe counts: a job started before `until` was claimed before the breaker
    -- opened (sqlite: GateRow.settle).
    if not started or started < (g['until'] or 0) - 1e-6 then return nil end
    if outcome == nil then
      g.probe = math.max(0, g.probe - 1)
      return nil
    end
    g.probe = 0
    if outcome then
      g.state, g.fails, g.wcalls, g.wfails, g.wstart = 'closed', 0, 0, 0, now
      return 'breaker_closed'
    end
    g.state, g['until'] = 'open', now + spec['c']
    return 'breaker_opened'
  end
  if g.state ~= 'closed' or outcome == nil then return nil end
  if now - g.wstart >= spec['w'] then
    g.wstart, g.wcalls, g.wfails = now, 0, 0
  end
  g.wcalls = g.wcalls + 1
  if outcome then
    g.fails = 0
    return nil
  end
  g.fails = g.fails + 1
  g.wfails = g.wfails + 1
  local f, r = spec['f'], spec['r']
  if (f ~= 0 and g.fails >= f) or (r ~= 0 and g.wcalls >= spec['m'] and g.wfails / g.wcalls >= r) then
    g.state, g['until'], g.probe = 'open', now + spec['c'], 0
    return 'breaker_opened'
  end
  return nil
end

local function gate_frees_waiters(g)
  local k = g.spec['k']
  if k == 'conc' then return g.active < tonumber(g.spec['n']) end
  return k == 'breaker'
end

-- A refused flow waits on gate ``name`` (a full concurrency gate, a busy half-open breaker).
local function wait_on(flow, name)
  redis.call('HSET', FWAIT, flow, name)
  redis.call('SADD', P .. 'fw:' .. name, flow)
  local g = gate_rows[name]
  if not (g and g.waiters) then
    redis.call('HSET', P .. 'g:' .. name, 'waiters', 1)
    if g then g.waiters = true end
  end
end

-- Flows waiting on a gate that has room again become claimable (unless also blocked by time).
local function unwait(name)
  local key = P .. 'fw:' .. name
  local flows = redis.call('SMEMBERS', key)
  redis.call('HDEL', P .. 'g:' .. name, 'waiters')
  gate_rows[name].waiters = false
  if #flows == 0 then return false end
  local woke = false
  for _, flow in ipairs(flows) do
    if redis.call('HGET', FWAIT, flow) == name then  -- else a stale entry
      redis.call('HDEL', FWAIT, flow)
      flow_sync(flow)
      woke = true
    end
  end
  redis.call('DEL', key)
  return woke
end

-- Jobs left `active`: ``left`` is a list of {flow, verdict}, verdict 1 (completed), 0 (failed
-- or retried) or -1 (none: released, recovered, cancelled). Gives their gates their slots
-- back, feeds breakers, emits breaker events and frees waiting flows (sqlite: flow.settle).
-- Returns true when set-aside flows became claimable (the caller wakes workers).
local function settle(left, now)
  local touched, order = {}, {}
  for _, l in ipairs(left) do
    local outcome = nil
    if l[2] == 1 then outcome = true elseif l[2] == 0 then outcome = false end
    for _, name in ipairs(gate_names(l[1])) do
      -- Rate gates are charged at claim only: not even loaded here.
      local g = string.sub(name, 1, 5) ~= 'rate:' and gate(name)
      if g then
        local ev = gate_settle(g, outcome, now, l[3])
        if not touched[name] then touched[name] = true; table.insert(order, name) end
        if ev then
          local data = '{"gate":' .. cjson.encode(name) .. ',"failures":' .. g.fails
          if ev == 'breaker_opened' then data = data .. ',"open_until":' .. num(g['until']) end
          event(ev, nil, task_of(name), nil, data .. '}')
        end
      end
    end
  end
  gates_save()
  local woke = false
  for _, name in ipairs(order) do
    local g = gate_rows[name]
    if g.waiters and gate_frees_waiters(g) and unwait(name) then woke = true end
  end
  return woke
end

-- Attempts of jobs cancelled while they ran have ended (the handler returned, the worker let
-- go of them, or their lease expired): give their gates' slots back (sqlite:
-- attempts.end_held). ``held`` is a list of {id, token or false (any)}. Returns true when
-- set-aside flows became claimable.
local function end_held(held, now)
  local left = {}
  for _, h in ipairs(held) do
    local id = h[1]
    if redis.call('ZSCORE', P .. 'held', id) then
      local cur = redis.call('HMGET', jkey(id), 'tk', 'fl', 'sa')
      if not h[2] or cur[1] == tostring(h[2]) then  -- that attempt (or any, h[2] false)
        redis.call('ZREM', P .. 'held', id)
        if cur[2] then table.insert(left, {cur[2], -1, tonumber(cur[3])}) end
      end
    end
  end
  return #left > 0 and settle(left, now)
end
