-- bstate: what deciding a batch's callbacks needs, read at once.
-- KEYS[1] the batch's prefix, ARGV[1] seconds of margin after a reservation's deadline (clock
-- differences between Cluster nodes) before it counts as abandoned
-- returns '' when no record; else {generation, fired ('' or fired time), callbacks stored ('1'
-- or ''), callbacks JSON, counts JSON or '', total or '', wait until (a live reservation's
-- deadline plus margin, or ''), tenant or '', created, expires or '', queue1, queue2, ...}
local r = P .. 'r'
local f = redis.call('HMGET', r, 'g', 'f', 'cs', 'cb', 'fc', 'ft', 'tn', 'c', 'ex')
if not f[1] then return '' end
local now = now_s()
local wait = nil
local adds = redis.call('HGETALL', P .. 'adds')
for i = 2, #adds, 2 do
  local until_ = tonumber(adds[i]) + tonumber(ARGV[1])
  if until_ > now and (not wait or until_ > wait) then wait = until_ end
end
local out = {f[1], f[2] or '', f[3] or '', f[4], f[5] or '', f[6] or '',
             wait and fmt(wait) or '', f[7] or '', f[8], f[9] or ''}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'qs')) do table.insert(out, q) end
return out
