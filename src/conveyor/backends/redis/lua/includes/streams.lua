-- Stream id helpers for the event log scripts (events, trim), prepended after common.lua.
-- Event ids are Redis stream ids '<ms>-<seq>'; the trim watermark P .. 'evcut' holds the
-- highest id retention ever deleted from the queue's stream (absent: none).
local function sid_parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, tonumber(seq)
end
-- -1, 0 or 1 as stream id a is before, equal to or after b.
local function sid_cmp(a, b)
  local am, as = sid_parse(a)
  local bm, bs = sid_parse(b)
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
