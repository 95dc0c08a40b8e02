-- keyrevoke: revoke an API key (conveyor.apikeys) at the server's time, once.
-- KEYS[1] the API keys' prefix "<prefix>:{keys}:"
-- ARGV[1] key id
-- returns 1 when revoked now, 0 when unknown or revoked already (nothing changed)
local k = P .. 'k:' .. ARGV[1]
if redis.call('EXISTS', k) == 0 or redis.call('HEXISTS', k, 'rv') == 1 then return 0 end
redis.call('HSET', k, 'rv', fmt(now_s()))
return 1
