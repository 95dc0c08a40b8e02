-- bdone: end a reservation of badd.lua (its members are stored, or were refused).
-- KEYS[1] the batch's prefix, ARGV[1] reservation token, ARGV[2] 'drop': the call that
-- created the record stored nothing (refused): the record goes too
-- returns 0
if ARGV[2] == 'drop' then
  redis.call('DEL', P .. 'r', P .. 'adds', P .. 'qs')
  return 0
end
if redis.call('HDEL', P .. 'adds', ARGV[1]) == 1 then redis.call('HINCRBY', P .. 'r', 'g', 1) end
return 0
