-- cost: add what attempts reported through ctx.cost to their jobs and to the queue's sums
-- (admin-only data). Sent right before finish.lua in the same pipeline (so a reader that sees
-- the job ended sees its cost), for outcomes that carry a cost only. Idempotent: `cot` is the newest claim token whose cost was added, so a batch sent
-- again adds nothing; it does not require the token to be the job's current one, because a
-- NOSCRIPT reload can run this script after the claim that followed it in the pipeline.
-- KEYS[1] queue prefix
-- ARGV[1] JSON array of {id, token, {unit: amount as a decimal string}}
-- returns {} (finish's shape: no lost ids)
for _, o in ipairs(cjson.decode(ARGV[1])) do
  local k = jkey(o[1])
  local cur = redis.call('HMGET', k, 'cot', 't', 'co')
  if cur[2] and tonumber(cur[1] or '0') < o[2] then
    local total = cur[3] and cjson.decode(cur[3]) or {}
    for unit, amount in pairs(o[3]) do
      total[unit] = (total[unit] or 0) + tonumber(amount)
      redis.call('HINCRBYFLOAT', P .. 'cost', cjson.encode({cur[2], unit}), amount)
    end
    redis.call('HSET', k, 'co', cjson.encode(total), 'cot', o[2])
  end
end
return {}
