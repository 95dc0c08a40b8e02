-- badd: create a batch record, or reserve the addition of members to an open one (step one of
-- three: badd, enqueue.lua with the reservation's deadline, bdone).
-- KEYS[1] the batch's prefix ("<prefix>:{b~<batch>}:"): record `r`, reservations `adds`
--         (token -> deadline), queues with parts `qs`
-- ARGV[1] reservation token, ARGV[2] seconds it lives, ARGV[3] tenant or '' (none)
-- ARGV[4] the callbacks' templates (JSON) to create the record, or '' to add to it
-- ARGV[5] the record's ttl after firing (seconds), ARGV[6..] the queues the members go to
-- Every reservation and release bumps the generation `g`: a fire decided on parts read before
-- a change of reservations is refused (bfire.lua).
-- returns the reservation's deadline (Redis time); errors 'EXISTS', 'NOTFOUND', 'CLOSED'
local r = P .. 'r'
local now = now_s()
local tenant = redis.call('HGET', r, 'tn') or ''
if ARGV[4] ~= '' then
  if redis.call('EXISTS', r) == 1 then return redis.error_reply('EXISTS') end
  redis.call('HSET', r, 'c', fmt(now), 'cb', ARGV[4], 'ttl', ARGV[5], 'g', 0)
  if ARGV[3] ~= '' then redis.call('HSET', r, 'tn', ARGV[3]) end
else
  if redis.call('EXISTS', r) == 0 or tenant ~= ARGV[3] then
    return redis.error_reply('NOTFOUND')
  end
  if redis.call('HEXISTS', r, 'f') == 1 then return redis.error_reply('CLOSED') end
end
local deadline = now + tonumber(ARGV[2])
redis.call('HSET', P .. 'adds', ARGV[1], fmt(deadline))
redis.call('HINCRBY', r, 'g', 1)
for i = 6, #ARGV do redis.call('SADD', P .. 'qs', ARGV[i]) end
return fmt(deadline)
