-- resume: an awaiting job back to queued with the decision (human in the loop), exactly once.
-- KEYS[1] queue prefix
-- ARGV[1] job id, ARGV[2] tenant or '' (any): another tenant's job is NOTFOUND
-- ARGV[3] the decision as JSON, or '' for none
-- Never refused by max_queued: the job was admitted when it was enqueued.
-- returns the job hash after the change (HGETALL); error 'NOTFOUND' when missing, 'STATE <status>'
-- when it is not awaiting (resumed already, timed out, cancelled...)
local id = ARGV[1]
local k = jkey(id)
local cur = redis.call('HMGET', k, 's', 'tn')
if not cur[1] or (ARGV[2] ~= '' and cur[2] ~= ARGV[2]) then return redis.error_reply('NOTFOUND') end
if cur[1] ~= 'awaiting' then return redis.error_reply('STATE ' .. cur[1]) end
-- A parent waiting for its children is resumed by them (settle.lua), not by a person.
if redis.call('HGET', k, 'fw') == '1' then return redis.error_reply('STATE awaiting children') end
resume_job(id, ARGV[3] ~= '' and ARGV[3] or nil, now_s(), nil)
return redis.call('HGETALL', k)
