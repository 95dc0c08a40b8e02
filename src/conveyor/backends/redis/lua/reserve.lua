-- reserve: reserve one start on a global rate gate (ctx.limit), GCRA as in limits.gcra: the
-- reservation is made whether or not the caller must wait, so callers are served in turn.
-- KEYS[1] the global limits prefix "<prefix>:{limits}:" (the gate lives at KEYS[1] .. 'gl:' ..
--         name; not a queue's keys, so no queue's gate can collide with it)
-- ARGV[1] gate name, ARGV[2] interval seconds, ARGV[3] burst
-- returns {now, seconds to wait before starting (0 = now)}
local k = P .. 'gl:' .. ARGV[1]
local interval, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_s()
local base = math.max(tonumber(redis.call('HGET', k, 'tat')) or 0, now)
local wait = math.max(0, base - (burst - 1) * interval - now)
redis.call('HSET', k, 'spec', '{"k":"rate","i":' .. string.format('%.17g', interval) ..
  ',"b":' .. string.format('%d', burst) .. '}', 'tat', string.format('%.17g', base + interval))
return {fmt(now), string.format('%.17g', wait)}
