-- Backpressure (a queue's max_queued), prepended to enqueue, admit and retry.
-- What counts: the queue's waiting jobs, queued (`ready` + `fqn`) and scheduled (`sched`), plus
-- the room reserved by enqueues spanning several queues between their two steps (admit.lua):
-- `rsv` (hash token -> jobs), `rsvx` (zset token -> expiry), `rsvn` (their sum). All O(1) but
-- the purge of expired reservations (only when some exist).
local RSV, RSVX, RSVN = P .. 'rsv', P .. 'rsvx', P .. 'rsvn'
local function rsv_drop(token)
  local n = redis.call('HGET', RSV, token)
  if n then
    redis.call('HDEL', RSV, token)
    redis.call('ZREM', RSVX, token)
    redis.call('DECRBY', RSVN, n)
  end
  return n
end
local function waiting(now)
  local reserved = tonumber(redis.call('GET', RSVN) or '0')
  if reserved > 0 then
    for _, t in ipairs(redis.call('ZRANGEBYSCORE', RSVX, '-inf', now)) do rsv_drop(t) end
    reserved = tonumber(redis.call('GET', RSVN) or '0')
  end
  return redis.call('ZCARD', P .. 'ready') + tonumber(redis.call('GET', P .. 'fqn') or '0')
    + redis.call('ZCARD', P .. 'sched') + reserved
end
-- The job an idempotency key of this tenant names, or false (enqueue.lua's rule: an entry whose
-- job is gone, or of another tenant's job, written before keys were per tenant, is no match).
local function idem_match(tenant, key)
  local existing = redis.call('HGET', idem_key(tenant), key)
  if existing then
    local cur = redis.call('HMGET', jkey(existing), 's', 'tn')
    if not cur[1] or cur[2] ~= (tenant or false) then existing = false end
  end
  return existing
end
-- How many of `items` would be created: not stored already (a resend after a lost reply, a
-- spool forwarder), not an idempotent match, not a repeated key of the call. ti, ki, ii: the
-- positions of the tenant, the idempotency key and the job id in an item.
local function new_jobs(items, ti, ki, ii)
  local seen, n = {}, 0
  for _, it in ipairs(items) do
    local key = it[ki]
    if redis.call('EXISTS', jkey(it[ii])) == 1 then
      -- stored already: enqueue.lua creates nothing for it
    elseif key == cjson.null then
      n = n + 1
    else
      local tenant = it[ti] ~= cjson.null and it[ti] or nil
      local sk = (tenant or '') .. '\n' .. key
      if not seen[sk] then
        seen[sk] = true
        if not idem_match(tenant, key) then n = n + 1 end
      end
    end
  end
  return n
end
local function queue_full(count, n, limit)
  return redis.error_reply('QUEUEFULL ' .. count .. ' ' .. n .. ' ' .. limit)
end
