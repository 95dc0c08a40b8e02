-- trim: delete the oldest events of one queue beyond a count and/or an age, and raise the trim
-- watermark (P .. 'evcut') to the newest deleted id in the same step: readers behind it learn
-- that they missed events (EventsTrimmed) instead of skipping them.
-- Finding the cut never reads the entries to delete (that would cost ~1 us each, more than
-- the XADD they came with), except for a small first trim:
-- - age: the newest entry older than the cutoff, one XREVRANGE step;
-- - count: P .. 'evmarks' (zset) holds a mark per trim call, member the stream's last id then,
--   score its ordinal (entries ever added). Cutting at the newest mark whose ordinal leaves at
--   least the count keeps between the count and the count plus one call's worth of events,
--   as MAXLEN ~ does. Without such a mark the oldest entries are read, at most ARGV[3].
-- KEYS[1] queue prefix
-- ARGV[1] events to keep at most or '' (no count limit)
-- ARGV[2] max age in seconds or '' (no age limit; the cutoff is taken on Redis's clock)
-- ARGV[3] entries read at most to find a count cut without a mark
-- returns the number deleted
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
if ARGV[2] ~= '' and first then
  local bound = string.format('%d', math.floor((now_s() - tonumber(ARGV[2])) * 1000)) .. '-0'
  -- (XREVRANGE from a bound below the first entry walks the whole stream: check first.)
  if sid_cmp(first[1], bound) < 0 then
    consider(redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', 1)[1][1])
  end
end
if ARGV[1] ~= '' and len > tonumber(ARGV[1]) then
  local target = added - tonumber(ARGV[1])  -- ordinal of the newest entry that may go
  local mark = redis.call('ZREVRANGEBYSCORE', marks, target, '-inf', 'LIMIT', 0, 1)
  if #mark > 0 then
    consider(mark[1])
  else
    local oldest = redis.call('XRANGE', key, '-', '+', 'COUNT',
                              math.min(len - tonumber(ARGV[1]), tonumber(ARGV[3])))
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
