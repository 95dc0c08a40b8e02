-- keystore: store an API key record (conveyor.apikeys) unless a key with its id exists.
-- KEYS[1] the API keys' prefix "<prefix>:{keys}:" (every key record in one Cluster slot)
-- ARGV[1] key id, ARGV[2] tenant or '' (admin keys), ARGV[3...] the record's hash fields and
--         values (never the secret: its sha256 only)
-- returns 1 when stored, 0 when the id exists (nothing changed)
-- Keys: k:<id> the record (hash); index, t:<tenant> ids by insertion order (sorted sets
-- scored by the counter seq), so listings are oldest first
local id, tenant = ARGV[1], ARGV[2]
local k = P .. 'k:' .. id
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, unpack(ARGV, 3))
local seq = redis.call('INCR', P .. 'seq')
redis.call('ZADD', P .. 'index', seq, id)
if tenant ~= '' then redis.call('ZADD', P .. 't:' .. tenant, seq, id) end
return 1
