-- heartbeat: register or refresh a live worker; forget workers whose heartbeat expired.
-- KEYS[1] the registry prefix "<prefix>:{workers}:" (one slot): `live` is a zset of worker id ->
--         heartbeat expiry, `w:<id>` a hash (i = the worker's info JSON, s = last seen) that
--         expires with the heartbeat, so a crashed worker leaves no data behind
-- ARGV[1] worker id, ARGV[2] its info (JSON), ARGV[3] ttl in seconds
-- returns now (Redis TIME)
local now = now_s()
local ttl = tonumber(ARGV[3])
local live = P .. 'live'
-- Only the expired entries are read: O(log n + expired), never every worker ever seen.
redis.call('ZREMRANGEBYSCORE', live, '-inf', '(' .. fmt(now))
redis.call('ZADD', live, now + ttl, ARGV[1])
local k = P .. 'w:' .. ARGV[1]
redis.call('HSET', k, 'i', ARGV[2], 's', fmt(now))
redis.call('PEXPIRE', k, math.ceil(ttl * 1000))
return fmt(now)
