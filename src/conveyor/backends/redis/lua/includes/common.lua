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
-- Retention trims the stream (trim.lua, recording how far), never XADD: an untracked trim
-- would let a reader skip events silently.
local function event(etype, id, task, tenant, data)
  local args = {'XADD', P .. 'events', '*', 'e', etype}
  if id then table.insert(args, 'j'); table.insert(args, id) end
  if task then table.insert(args, 't'); table.insert(args, task) end
  if tenant and tenant ~= false then table.insert(args, 'n'); table.insert(args, tenant) end
  if data then table.insert(args, 'd'); table.insert(args, data) end
  return redis.call(unpack(args))
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
