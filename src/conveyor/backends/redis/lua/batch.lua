-- batch: counts by state of a batch's jobs in this queue, and their first start / last finish.
-- KEYS[1] queue prefix
-- ARGV[1] batch id
-- ARGV[2] tenant: count only its jobs ('' = every tenant's; tenants are never empty)
-- returns {first_started or '', last_finished or '', state1, n1, state2, n2, ...}
local ids = redis.call('SMEMBERS', P .. 'b:' .. ARGV[1])
local tenant = ARGV[2] or ''
local counts = {}
local first, last = nil, nil
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jkey(id), 's', 'sa', 'fa', 'tn')
  if f[1] and (tenant == '' or f[4] == tenant) then
    counts[f[1]] = (counts[f[1]] or 0) + 1
    local sa, fa = tonumber(f[2]), tonumber(f[3])
    if sa and (not first or sa < first) then first = sa end
    if fa and (not last or fa > last) then last = fa end
  end
end
local out = {first and fmt(first) or '', last and fmt(last) or ''}
for s, n in pairs(counts) do table.insert(out, s); table.insert(out, n) end
return out
