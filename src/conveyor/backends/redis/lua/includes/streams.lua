-- Event log helpers for the scripts that read or trim it (events, trim, enqueue), prepended
-- after common.lua (and flow.lua).
-- Event ids are Redis stream ids '<ms>-<seq>'; the trim watermark P .. 'evcut' holds the
-- highest id retention ever deleted from the queue's stream (absent: none).
-- enqueue keeps the log under this many events (plus slack) when no worker trims it.
local EVENTS_CAP = 100000
local EVENTS_SLACK = 10000
-- (sid_parse and sid_cmp are in common.lua.)
-- Delete the oldest events beyond ``keep`` ('' : no count limit) and/or older than ``age``
-- seconds ('' : none), and raise the trim watermark (evcut) to the newest deleted id in the
-- same step. Returns the number deleted. See trim.lua for how the cut is found.
local function trim_stream(keep, age, read_max)
  local key = P .. 'events'
  local marks = P .. 'evmarks'
  if redis.call('EXISTS', key) == 0 then return 0 end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  local added, len = tonumber(f['entries-added']), tonumber(f['length'])
  local cut = nil
  local function consider(id)
    if id and (not cut or sid_cmp(id, cut) > 0) then cut = id end
  end
  local first = f['first-entry']
  if age ~= '' and first then
    local bound = string.format('%d', math.floor((now_s() - tonumber(age)) * 1000)) .. '-0'
    -- (XREVRANGE from a bound below the first entry walks the whole stream: check first.)
    if sid_cmp(first[1], bound) < 0 then
      consider(redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', 1)[1][1])
    end
  end
  if keep ~= '' and len > tonumber(keep) then
    local target = added - tonumber(keep)  -- ordinal of the newest entry that may go
    local mark = redis.call('ZREVRANGEBYSCORE', marks, target, '-inf', 'LIMIT', 0, 1)
    if #mark > 0 then
      consider(mark[1])
    else
      local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT',
                                math.min(len - tonumber(keep), tonumber(read_max)))
      consider(oldest[#oldest][1])
    end
  end
  local n = 0
  if cut then
    local ms, seq = sid_parse(cut)
    n = redis.call('XTRIM', key, 'MINID', ms .. '-' .. string.format('%d', seq + 1))
    local old = redis.call('GET', P .. 'evcut')
    if not old or sid_cmp(cut, old) > 0 then redis.call('SET', P .. 'evcut', cut) end
    -- marks at or below the entries now deleted (ordinals added - length) cannot be used again
    redis.call('ZREMRANGEBYSCORE', marks, '-inf', added - (len - n))
  end
  if len - n > 0 then redis.call('ZADD', marks, added, f['last-generated-id']) end
  return n
end
