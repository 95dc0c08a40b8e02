-- What claim.lua and peek.lua share, prepended after common.lua and flow.lua: making due work
-- claimable, and when more may become claimable.
local READY = P .. 'ready'
-- The job fields a claim returns, by position (codec.job_from_claim reads them in this order).
local CLAIMED = {t = 1, p = 2, pr = 3, a = 4, ma = 5, st = 6, ms = 7, to = 8, l = 9, tn = 10,
                 b = 11, wf = 12, pa = 13, ik = 14, c = 15, e = 16, tk = 17, m = 18, sf = 19,
                 ap = 20, ai = 21, ar = 22}
local C_T, C_A, C_L, C_TN, C_TK = 1, 4, 9, 10, 17

-- Due scheduled jobs (delays, retry backoff) become ready: each gets a new place in its line.
-- `sf` stays: it is when the job became ready (wait time, backlog age), as on SQLite.
local function promote_due(now)
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
  end
  if #due > 0 then redis.call('ZREM', P .. 'sched', unpack(due)) end
end

-- Flows whose set-aside time passed are claimable again (unless waiting on a slot). Returns
-- whether the queue has flows at all (a queue without costs this one EXISTS).
local function release_flows(now)
  if redis.call('EXISTS', FLOWS, FBLK) == 0 then return false end
  local free = redis.call('ZRANGEBYSCORE', FBLK, '-inf', now, 'LIMIT', 0, 1000)
  if #free > 0 then
    redis.call('ZREM', FBLK, unpack(free))
    for _, flow in ipairs(free) do flow_sync(flow) end
  end
  return true
end

-- When more may become claimable: the first scheduled due time, or the earliest release of a
-- set-aside flow with ready jobs and no slot to wait for (sqlite: next_permitted); past a few
-- skipped entries, the next score is a safe bound. '' for never.
local function next_due(has_flows)
  local first = redis.call('ZRANGE', P .. 'sched', 0, 0, 'WITHSCORES')
  local due = first[2] and tonumber(first[2])
  if has_flows then
    local blk = redis.call('ZRANGE', FBLK, 0, 7, 'WITHSCORES')
    for i = 1, #blk, 2 do
      local at = tonumber(blk[i + 1])
      if i == 15 or (redis.call('HEXISTS', FWAIT, blk[i]) == 0
          and redis.call('EXISTS', fqkey(blk[i])) == 1) then
        if not due or at < due then due = at end
        break
      end
    end
  end
  return due and num(due) or ''
end
