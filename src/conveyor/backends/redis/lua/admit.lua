-- admit: reserve room under max_queued for an enqueue that spans several queues (step one of
-- two: every limited queue of the call admits it, or none keeps a reservation; step two is
-- enqueue.lua with the token, which consumes the reservation instead of checking again).
-- KEYS[1] queue prefix
-- ARGV[1] token, ARGV[2] the queue's max_queued, or 'release' to drop the token's reservation
-- ARGV[3] seconds the reservation lives if step two never comes (a producer that died)
-- ARGV[4] JSON array of the call's jobs of this queue: {tenant or null, idempotency key or null,
--         job id}
-- returns the number of jobs reserved (0: nothing to reserve, all are idempotent matches);
-- error 'QUEUEFULL <count> <needed> <limit>' when they do not fit (nothing reserved)
local token = ARGV[1]
if ARGV[2] == 'release' then
  rsv_drop(token)
  return 0
end
local limit = tonumber(ARGV[2])
local now = now_s()
local items = cjson.decode(ARGV[4])
local n = new_jobs(items, 1, 2, 3)
if n == 0 then return 0 end
local count = waiting(now)
if count + n > limit then return queue_full(count, n, limit) end
-- Room for every job of the call when there is: a key matched now whose job retention deletes
-- before step two makes one job more than counted.
local r = math.max(n, math.min(#items, limit - count))
redis.call('HSET', RSV, token, r)
redis.call('ZADD', RSVX, now + tonumber(ARGV[3]), token)
redis.call('INCRBY', RSVN, r)
return r
