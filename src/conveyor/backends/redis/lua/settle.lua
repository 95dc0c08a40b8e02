-- settle: apply a child's end to its parent's fan-in (fan-out / fan-in), exactly once.
-- KEYS[1] the parent's queue prefix
-- ARGV[1] the settle message settle_edge (includes/fanin.lua) wrote in the child's queue:
--         {k: 'settle', q: parent queue, p: parent id, c: child id, s: the child's final
--         state, r: its result JSON or null, e: its error JSON or null}
-- The child's end is stored once (HSETNX in `fr:<parent>`: a repeat, or a child of another
-- round, changes nothing), settled / failed counted, the progress set (settled of total, and a
-- `progress` event); then, while the parent waits, its policy decides: fail_parent fails it
-- (error ChildFailed naming the child; its own edge settles; pending siblings get cancel
-- messages unless fx is '0'), continue resumes it at a failure, and the last settle resumes it.
-- A parent failed by fail_parent that is a member of a batch with callbacks ends there: it is
-- counted in its batch part (batch_end, as finish/cancel/expire do; a part that ends is listed
-- in `bdirty`), and 2 is returned so that the forwarder checks this queue's batches at once.
-- returns 1 when applied, 0 when ignored, 2 when applied and a batch part ended
local m = cjson.decode(ARGV[1])
local parent, child = m.p, m.c
local spot = redis.call('HGET', P .. 'fc:' .. parent, child)
if not spot then return 0 end
local idx = tonumber(string.match(spot, '^(%d+)'))
local stored = cjson.encode({s = m.s, r = m.r, e = m.e})
if redis.call('HSETNX', P .. 'fr:' .. parent, child, stored) == 0 then return 0 end
local k = jkey(parent)
local cur = redis.call('HMGET', k, 's', 'fp', 'fx', 'ft', 'fw', 't', 'tn', 'a', 'b')
if not cur[1] then return 0 end
local now = now_s()
local settled = redis.call('HINCRBY', k, 'fs', 1)
local failure = m.s ~= 'completed'
if failure then redis.call('HINCRBY', k, 'ff', 1) end
local total = tonumber(cur[4])
local prog = {percent = total > 0 and math.floor(10000 * settled / total + 0.5) / 100 or 100,
              message = settled .. ' of ' .. total .. ' children done', stage = 'children',
              meta = {settled = settled, total = total}}
event('progress', parent, cur[6], cur[7], cjson.encode(prog))
prog.updated_at = now
redis.call('HSET', k, 'pg', cjson.encode(prog))
if cur[5] ~= '1' or cur[1] ~= 'awaiting' then return 1 end
local act = nil
if failure and cur[2] == 'fail_parent' then
  act = 'fail'
elseif (failure and cur[2] == 'continue') or settled >= total then
  act = 'resume'
end
if not act then return 1 end
redis.call('HSET', k, 'fw', 0)
if act == 'resume' then
  resume_job(parent, nil, now, 'children')
  return 1
end
local detail = ''
if m.e ~= cjson.null then
  local e = cjson.decode(m.e)
  detail = ': ' .. tostring(e.type) .. ': ' .. string.sub(tostring(e.message), 1, 300)
end
local what = m.s == 'cancelled' and 'was cancelled' or 'failed'
local message = 'child ' .. child .. ' (spawn index ' .. idx .. ') ' .. what .. detail
local err = cjson.encode({type = 'ChildFailed', message = message, child = child, index = idx})
redis.call('ZREM', AWAIT, parent)
redis.call('HDEL', k, 'ad')
redis.call('HSET', k, 's', 'failed', 'fa', fmt(now), 'e', err)
redis.call('ZADD', P .. 'f:failed', now, parent)
event('failed', parent, cur[6], cur[7], '{"attempt":' .. (cur[8] or '0') .. ',"error":' ..
      cjson.encode({type = 'ChildFailed', message = message}) .. ',"reason":"child"}')
local part_ended = batch_end(cur[9], 'failed')  -- a batch member ends (a no-op if none)
settle_edge(parent, 'failed', nil, err)  -- the parent may be a child itself
if cur[3] == '1' then cancel_pending(parent) end
return part_ended and 2 or 1
