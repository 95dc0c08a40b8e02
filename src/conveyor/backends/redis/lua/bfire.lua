-- bfire: decide a batch's callbacks (once), or note that they are stored.
-- KEYS[1] the batch's prefix
-- ARGV[1] 'decide': ARGV[2] the generation the caller read before reading the parts, ARGV[3]
--         counts JSON, ARGV[4] total. Refused when the generation moved (a reservation began
--         or ended since: the parts read may miss members). The first decision is kept: a
--         later caller gets the stored counts. Sets the record's expiry (ttl after firing).
--         returns {'1', counts JSON, total} decided (now or before), {'0'} refused
-- ARGV[1] 'stored': the callback jobs exist; returns 0
local r = P .. 'r'
if ARGV[1] == 'stored' then
  redis.call('HSET', r, 'cs', '1')
  return 0
end
local f = redis.call('HMGET', r, 'g', 'f', 'fc', 'ft', 'ttl')
if not f[1] then return {'0'} end
if f[2] then return {'1', f[3], f[4]} end
if f[1] ~= ARGV[2] then return {'0'} end
local now = now_s()
local ex = now + tonumber(f[5])
redis.call('HSET', r, 'f', fmt(now), 'fc', ARGV[3], 'ft', ARGV[4], 'ex', fmt(ex))
for _, k in ipairs({r, P .. 'adds', P .. 'qs'}) do
  redis.call('PEXPIREAT', k, math.floor(ex * 1000))
end
return {'1', ARGV[3], ARGV[4]}
