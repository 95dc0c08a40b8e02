-- extend: renew the leases of a worker's active jobs.
-- KEYS[1] queue prefix
-- ARGV[1] worker id, ARGV[2] JSON array of {id, token}
-- returns the ids no longer held (cancelled, or recovered and claimed again)
local now = now_s()
local lost = {}
for _, h in ipairs(cjson.decode(ARGV[2])) do
  local id = h[1]
  local k = jkey(id)
  local cur = redis.call('HMGET', k, 's', 'tk', 'l')
  if cur[1] == 'active' and cur[2] == tostring(h[2]) then
    redis.call('ZADD', P .. 'active', now + tonumber(cur[3]), id)  -- the lease's expiry
  else
    if cur[1] == 'cancelled' and cur[2] == tostring(h[2])
        and redis.call('ZSCORE', P .. 'held', id) then
      -- Still running after a cancel: keep holding its slots, but tell the worker to stop it.
      redis.call('ZADD', P .. 'held', now + tonumber(cur[3]), id)  -- the lease's expiry
    end
    table.insert(lost, id)
  end
end
return lost
