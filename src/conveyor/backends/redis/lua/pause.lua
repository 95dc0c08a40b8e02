-- pause: set or clear a queue's pause flag. claim.lua and peek.lua take nothing from a queue
-- whose flag is set (they check it in their own script: atomic with the claim).
-- KEYS[1] queue prefix
-- ARGV[1] '1' to pause, '0' to resume
-- returns 1 when the flag changed (one queue_paused / queue_resumed event appended; a resume
-- wakes the queue's blocked workers, as an enqueue does), 0 when it was already so
if ARGV[1] == '1' then
  if redis.call('SET', P .. 'paused', fmt(now_s()), 'NX') then
    event('queue_paused', nil, nil, nil, nil)
    return 1
  end
  return 0
end
if redis.call('DEL', P .. 'paused') == 1 then
  event('queue_resumed', nil, nil, nil, nil)
  wake()
  return 1
end
return 0
