-- progress: store the progress of an active attempt and emit a progress event.
-- KEYS[1] queue prefix
-- ARGV[1] job id, ARGV[2] claim token, ARGV[3] worker (unused), ARGV[4] progress JSON (without updated_at)
-- returns 1 if stored, 0 if the attempt is not held
local id = ARGV[1]
local k = jkey(id)
local cur = redis.call('HMGET', k, 's', 'tk', 't', 'tn')
if cur[1] ~= 'active' or cur[2] ~= ARGV[2] then return 0 end
local p = cjson.decode(ARGV[4])
p['updated_at'] = now_s()
local data = cjson.encode(p)
redis.call('HSET', k, 'pg', data)
event('progress', id, cur[3], cur[4], data)
return 1
