-- prune: delete finished jobs of one state finished before a cutoff and/or beyond a count.
-- KEYS[1] queue prefix
-- ARGV[1] state ('completed'|'failed'|'cancelled'), ARGV[2] max age in seconds or '' (none;
-- the cutoff is taken on Redis's clock),
-- ARGV[3] max count to keep or '' (none), ARGV[4] max jobs deleted per call
-- returns the number deleted (call again while it returns ARGV[4])
local z = P .. 'f:' .. ARGV[1]
local limit = tonumber(ARGV[4])
local ids = {}
if ARGV[3] ~= '' then
  local keep = tonumber(ARGV[3])
  local total = redis.call('ZCARD', z)
  if total > keep then
    ids = redis.call('ZRANGE', z, 0, math.min(total - keep, limit) - 1)
  end
end
if #ids < limit and ARGV[2] ~= '' then
  local cutoff = now_s() - tonumber(ARGV[2])
  local more = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. fmt(cutoff), 'LIMIT', #ids, limit - #ids)
  for _, id in ipairs(more) do table.insert(ids, id) end
end
local n = 0
for _, id in ipairs(ids) do
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'ik', 'b', 'tn', 'wf', 'ft')
  if f[1] then
    -- The key's entry, where it still names this job (also in 'idem' for a tenant's job
    -- stored before keys were per tenant).
    for _, ik in ipairs({idem_key(f[3]), P .. 'idem'}) do
      if redis.call('HGET', ik, f[1]) == id then redis.call('HDEL', ik, f[1]) end
    end
  end
  if f[2] then redis.call('SREM', P .. 'b:' .. f[2], id) end
  if f[3] then redis.call('ZREM', P .. 'tn:' .. f[3], id) end
  if f[4] then redis.call('ZREM', P .. 'wf:' .. f[4], id) end
  if f[5] then redis.call('DEL', P .. 'fc:' .. id, P .. 'fr:' .. id) end  -- a fan-in parent
  if ARGV[1] == 'cancelled' then end_held({{id, false}}, now_s()) end  -- still running
  if redis.call('DEL', k) == 1 then n = n + 1 end
  redis.call('ZREM', z, id)
end
return n
