-- events: read one queue's event stream after a position, atomically with the trim check, so
-- a trim can never slip between the check and the read.
-- KEYS[1] queue prefix
-- ARGV[1] position: entries with a greater stream id are read ('0-0': from the start)
-- ARGV[2] '1': a position behind the trim watermark moves up to it (read from the oldest kept
--         event); '': such a position is reported, never skipped
-- ARGV[3] entries to scan at most
-- ARGV[4] job id filter or '', ARGV[5] tenant filter or ''
-- returns {'TRIMMED', watermark} when events after the position were trimmed and ARGV[2] is '';
-- else {done (1: scanned to the end of the stream), the position after the scan,
--       id1, fields1, id2, fields2, ...} holding only the entries that match the filters
local after = ARGV[1]
local cut = redis.call('GET', P .. 'evcut')
if cut and sid_cmp(cut, after) > 0 then
  if ARGV[2] ~= '1' then return {'TRIMMED', cut} end
  after = cut
end
local n = tonumber(ARGV[3])
local got = redis.call('XRANGE', P .. 'events', '(' .. after, '+', 'COUNT', n)
local out = {#got < n and 1 or 0, #got > 0 and got[#got][1] or after}
local job, tenant = ARGV[4], ARGV[5]
for _, e in ipairs(got) do
  local keep = true
  if job ~= '' or tenant ~= '' then
    local f, j, t = e[2], nil, nil
    for i = 1, #f, 2 do
      if f[i] == 'j' then j = f[i + 1] elseif f[i] == 'n' then t = f[i + 1] end
    end
    keep = (job == '' or j == job) and (tenant == '' or t == tenant)
  end
  if keep then
    out[#out + 1] = e[1]
    out[#out + 1] = e[2]
  end
end
return out
