-- Shared helpers, prepended to every script at load time.
-- Key layout: every key of a queue starts with KEYS[1] = "<prefix>:{<queue>}:" so a queue
-- lives in one Redis Cluster slot. See docs/architecture.md.
local P = KEYS[1]
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function jkey(id) return P .. 'j:' .. id end
-- Ready score: higher priority first, then FIFO by a per-queue sequence.
local function ready_score(priority)
  return (100 - tonumber(priority)) * 1099511627776 + redis.call('INCR', P .. 'seq')
end
-- Stream ids '<ms>-<seq>': parsed, and compared (-1, 0 or 1 as a is before, equal to, after b).
local function sid_parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, tonumber(seq)
end
local function sid_cmp(a, b)
  local am, as = sid_parse(a)
  local bm, bs = sid_parse(b)
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
-- The first event of this script must sort after this stream id (nil: no constraint). A claim
-- sets it to the newest event of the same worker's previous claim, maybe in another queue's
-- stream: the log then shows one worker's claims across queues in the order it made them
-- (the cursor merges streams by id, then queue).
local event_after = nil
local last_event = nil  -- the id of the newest event this script wrote
local function first_event_id()
  local after = event_after
  event_after = nil
  local ms, seq = sid_parse(after)
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ms) + 1 then
    return '*'  -- a later millisecond: Redis's own id sorts after
  end
  local want = ms .. '-' .. string.format('%d', seq + 1)
  local top = redis.call('XREVRANGE', P .. 'events', '+', '-', 'COUNT', 1)[1]
  if top and sid_cmp(top[1], want) >= 0 then return '*' end
  return want
end
-- Retention trims the stream (trim.lua, recording how far), never XADD: an untracked trim
-- would let a reader skip events silently.
local EVENTS = P .. 'events'
local function event(etype, id, task, tenant, data)
  local sid = event_after and first_event_id() or '*'
  if id and task then  -- a job's event: one call without building an argument table
    if tenant then
      if data then
        last_event = redis.call('XADD', EVENTS, sid, 'e', etype, 'j', id, 't', task,
                                'n', tenant, 'd', data)
      else
        last_event = redis.call('XADD', EVENTS, sid, 'e', etype, 'j', id, 't', task,
                                'n', tenant)
      end
    elseif data then
      last_event = redis.call('XADD', EVENTS, sid, 'e', etype, 'j', id, 't', task, 'd', data)
    else
      last_event = redis.call('XADD', EVENTS, sid, 'e', etype, 'j', id, 't', task)
    end
    return last_event
  end
  local args = {'XADD', EVENTS, sid, 'e', etype}
  if id then table.insert(args, 'j'); table.insert(args, id) end
  if task then table.insert(args, 't'); table.insert(args, task) end
  if tenant and tenant ~= false then table.insert(args, 'n'); table.insert(args, tenant) end
  if data then table.insert(args, 'd'); table.insert(args, data) end
  last_event = redis.call(unpack(args))
  return last_event
end
-- A command taking many arguments after `key` (ZADD scores and members, ZREM members, ...),
-- in chunks: Lua's unpack has a limit of a few thousand values.
local function many(cmd, key, args)
  for i = 1, #args, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end
local function wake()
  -- A marker for blocked workers (BZPOPMIN); one member, so it never grows.
  redis.call('ZADD', P .. 'marker', 0, 'w')
end
local function bump_rate(now, field, by)
  local bucket = math.floor(now / 10)
  redis.call('HINCRBYFLOAT', P .. 'rates', field .. ':' .. bucket, by)
end
-- A tenant's idempotency keys (key -> job id); 'idem' holds those of jobs without a tenant.
local function idem_key(tenant)
  if tenant then return P .. 'idem:' .. tenant end
  return P .. 'idem'
end
-- Batch parts (batches with callbacks, redis/batches.py): per queue and batch, `bp:<batch>`
-- counts the members stored here (n) and those ended (completed, failed, cancelled). A part
-- whose members all ended is listed in `bdirty` (score: when to check the batch), in the same
-- script as the member's transition: a worker that dies before checking leaves it there for
-- the periodic sweep. Returns true when the part ended. No part (a batch without callbacks, or
-- one whose callbacks fired): nothing.
local function batch_end(batch, state, by)
  if not batch then return false end
  local k = P .. 'bp:' .. batch
  if redis.call('EXISTS', k) == 0 then return false end
  redis.call('HINCRBY', k, state, by or 1)
  local c = redis.call('HMGET', k, 'n', 'completed', 'failed', 'cancelled')
  if (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0) + (tonumber(c[4]) or 0) >= tonumber(c[1]) then
    redis.call('ZADD', P .. 'bdirty', now_s(), batch)
    return true
  end
  return false
end
