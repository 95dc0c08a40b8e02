-- event: append one event outside a job transition (breakers, custom).
-- KEYS[1] queue prefix
-- ARGV[1] type, ARGV[2] job id or '', ARGV[3] task or '', ARGV[4] tenant or '', ARGV[5] data or ''
-- returns the stream id
local function opt(x) if x == '' then return nil end return x end
return event(ARGV[1], opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5]))
