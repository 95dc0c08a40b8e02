-- peek: the best ready candidates of one queue, for a claim across several queues. Queues
-- live in different Cluster slots, so no one script can merge them: the worker runs this
-- script on each queue (one pipeline), merges the candidates by priority, then enqueue order
-- (attempts.py), and claims each queue's share with claim.lua (a second pipeline).
-- Like claim.lua it first promotes due scheduled jobs and releases set-aside flows whose time
-- passed, so the candidates are the jobs a claim would take, in its order. Jobs of claimable
-- flows count as candidates (gates are not asked: the claim applies them and may take fewer).
-- KEYS[1] queue prefix
-- ARGV[1] candidates at most
-- returns {now, next_due or '' (as claim.lua's, when fewer than asked), n, id1, score1, id2,
-- score2, ...} best first; a score is (100 - priority) * 2^40 + the queue's FIFO sequence
local cap = tonumber(ARGV[1])
local now = now_s()
promote_due(now)
-- A paused queue (pause.lua) has no candidates, and no due time: its resume wakes the workers.
if redis.call('EXISTS', P .. 'paused') == 1 then return {fmt(now), '', 0} end
local has_flows = release_flows(now)
local cands = redis.call('ZRANGE', READY, 0, cap - 1, 'WITHSCORES')

-- Two flat {id, score, ...} lists in score order, merged, the first `cap` pairs kept.
local function merge(a, b)
  local out, i, j = {}, 1, 1
  while #out < 2 * cap and (i <= #a or j <= #b) do
    if j > #b or (i <= #a and tonumber(a[i + 1]) <= tonumber(b[j + 1])) then
      out[#out + 1] = a[i]; out[#out + 1] = a[i + 1]; i = i + 2
    else
      out[#out + 1] = b[j]; out[#out + 1] = b[j + 1]; j = j + 2
    end
  end
  return out
end

if has_flows then
  -- Flows in head order; each adds its jobs below the current cut (the cap-th candidate),
  -- until a head is past the cut.
  local heads = redis.call('ZRANGE', FLOWS, 0, cap - 1, 'WITHSCORES')
  for i = 1, #heads, 2 do
    local full = #cands >= 2 * cap
    if full and tonumber(heads[i + 1]) >= tonumber(cands[#cands]) then break end
    local rows
    if full then
      rows = redis.call('ZRANGEBYSCORE', fqkey(heads[i]), '-inf', '(' .. cands[#cands],
                        'WITHSCORES', 'LIMIT', 0, cap)
    else
      rows = redis.call('ZRANGE', fqkey(heads[i]), 0, cap - 1, 'WITHSCORES')
    end
    cands = merge(cands, rows)
  end
end

local n = #cands / 2
local out = {fmt(now), n < cap and next_due(has_flows) or '', n}
for i = 1, #cands do out[#out + 1] = cands[i] end
return out
