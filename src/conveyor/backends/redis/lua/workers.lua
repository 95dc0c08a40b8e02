-- workers: the live workers (heartbeat not expired), read at one instant of Redis's clock.
-- KEYS[1] the registry prefix "<prefix>:{workers}:" (see heartbeat.lua)
-- returns {now, id1, last_seen1, info1, id2, ...}
local now = now_s()
local out = {fmt(now)}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'live', fmt(now), '+inf')) do
  local h = redis.call('HMGET', P .. 'w:' .. id, 's', 'i')
  if h[1] then
    table.insert(out, id); table.insert(out, h[1]); table.insert(out, h[2])
  end
end
return out
