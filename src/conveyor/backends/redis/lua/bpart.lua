-- bpart: read one queue's part of a batch, or clear a batch from the queue's `bdirty` list.
-- KEYS[1] queue prefix
-- ARGV[1] 'read': ARGV[2] batch id; returns {n, completed, failed, cancelled} ('' when no part)
-- ARGV[1] 'clear': ARGV[2] batch id, ARGV[3] the score the caller read: removed only when still
--         that score (a part that ended again meanwhile stays listed); ARGV[4] 'drop' also
--         deletes the part (the batch fired); returns 1 when removed
-- ARGV[1] 'later': ARGV[2] batch id, ARGV[3] when to check it again; returns 0
local k = P .. 'bp:' .. ARGV[2]
if ARGV[1] == 'read' then
  local c = redis.call('HMGET', k, 'n', 'completed', 'failed', 'cancelled')
  if not c[1] then return '' end
  return {c[1], c[2] or '0', c[3] or '0', c[4] or '0'}
end
if ARGV[1] == 'later' then
  redis.call('ZADD', P .. 'bdirty', 'XX', ARGV[3], ARGV[2])
  return 0
end
if ARGV[4] == 'drop' then redis.call('DEL', k) end
local score = redis.call('ZSCORE', P .. 'bdirty', ARGV[2])
if score and (ARGV[3] == '' or tonumber(score) == tonumber(ARGV[3])) then
  redis.call('ZREM', P .. 'bdirty', ARGV[2])
  return 1
end
return 0
