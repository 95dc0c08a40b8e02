-- cron: claim one tick of a schedule and enqueue its job, atomically. Runs in front of
-- enqueue.lua (scripts.py joins them as the script `tick`): when the tick is claimed with a job,
-- control falls through into enqueue.lua, which stores the job and returns its reply.
-- KEYS[1] queue prefix (the schedule's state is in the queue's slot, next to its jobs)
-- ARGV[1..4] as enqueue.lua (ARGV[1]: '[]', or the tick's one job; ARGV[3] always '')
-- ARGV[5] schedule name; ARGV[6] tick (epoch ms); ARGV[7] '1': no job while the previous job of
--         the schedule is not final (overlap "skip")
-- Hash `cron:<name>`: lt = last tick claimed, lf = last tick that fired, lj = its job id.
-- returns {'TAKEN', last} (a tick >= this one was claimed: nothing changed), {'CLAIMED', tick}
-- (claimed, no job given), {'BUSY', tick, previous job id} (claimed, no job: overlap), or
-- enqueue.lua's reply {now, id, created} (claimed and fired)
local CK = P .. 'cron:' .. ARGV[5]
local tick = tonumber(ARGV[6])
local last = tonumber(redis.call('HGET', CK, 'lt') or '')
if last and last >= tick then return {'TAKEN', tostring(last)} end
redis.call('HSET', CK, 'lt', ARGV[6])
local tick_jobs = cjson.decode(ARGV[1])
if #tick_jobs == 0 then return {'CLAIMED', ARGV[6]} end
local previous = redis.call('HGET', CK, 'lj')
if ARGV[7] == '1' and previous then
  local s = redis.call('HGET', jkey(previous), 's')
  if s and s ~= 'completed' and s ~= 'failed' and s ~= 'cancelled' then
    return {'BUSY', ARGV[6], previous}
  end
end
redis.call('HSET', CK, 'lf', ARGV[6], 'lj', tick_jobs[1][1])
