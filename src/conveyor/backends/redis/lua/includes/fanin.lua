-- Fan-out / fan-in, prepended (after flow.lua, before attempt.lua) to the scripts that end a
-- job for good (finish, recover, cancel, expire) and to settle.lua (sqlite: backends/sqlite/
-- fanin.py). A child carries its edge in its hash: pa parent id, fq the parent's queue, fi its
-- spawn index. A parent carries its fan-in record: fp policy, fx cancel siblings ('1'/'0'), ft
-- total, fs settled, ff failed, fw '1' while waiting; `fc:<parent>` child id -> 'index queue'
-- (the last round's children), `fr:<parent>` child id -> its settled end (JSON).

-- A job ended for good: if it is a fan-in child, write a settle message for its parent to this
-- queue's outbox (`settle:<id>`), atomically with the transition; the forwarder applies it in
-- the parent's slot (settle.lua), which ignores repeats. result / err: JSON text or nil.
local function settle_edge(id, status, result, err)
  local cur = redis.call('HMGET', jkey(id), 'fq', 'pa')
  if not cur[1] or not cur[2] then return end
  redis.call('HSET', P .. 'out', 'settle:' .. id, cjson.encode({k = 'settle', q = cur[1],
    p = cur[2], c = id, s = status, r = result or cjson.null, e = err or cjson.null}))
end

-- Ask for the cancel of the parent's children whose edge is still open: `cancel:<child>`
-- messages in this (the parent's) queue's outbox, applied by the forwarder in each child's
-- queue (cancel.lua; a child that ended meanwhile is left as it is).
local function cancel_pending(parent)
  local fr = P .. 'fr:' .. parent
  local all = redis.call('HGETALL', P .. 'fc:' .. parent)
  for i = 1, #all, 2 do
    if redis.call('HEXISTS', fr, all[i]) == 0 then
      local q = string.match(all[i + 1], '^%d+ (.*)$')
      redis.call('HSET', P .. 'out', 'cancel:' .. all[i],
                 cjson.encode({k = 'cancel', q = q, j = all[i]}))
    end
  end
end

-- A parent parks for its children (finish.lua, await with a fan-out): a new round replaces the
-- last one's edges. spec: {p = policy, x = cancel siblings, c = {{child id, queue}, ...}}.
local function fan_park(id, spec, now)
  local k = jkey(id)
  local fc = P .. 'fc:' .. id
  redis.call('DEL', fc, P .. 'fr:' .. id)
  local map = {}
  for i, c in ipairs(spec.c) do
    map[#map + 1] = c[1]
    map[#map + 1] = (i - 1) .. ' ' .. c[2]
  end
  many('HSET', fc, map)
  local total = #spec.c
  redis.call('HSET', k, 'fp', spec.p, 'fx', spec.x and '1' or '0', 'ft', total, 'fs', 0,
             'ff', 0, 'fw', 1, 'pg', cjson.encode({percent = 0, message = '0 of ' .. total ..
             ' children done', stage = 'children', meta = {settled = 0, total = total},
             updated_at = now}))
end
