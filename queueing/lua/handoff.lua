-- Hand one stored batch's verification jobs to its partition's streams, once.
--
-- KEYS[1], KEYS[2]: the email and the NIK job streams of the partition;
-- KEYS[3]: the hand-off's marker.
-- ARGV[1]: how long the marker lives (seconds); ARGV[2]: the registration ids,
-- 16 bytes each, concatenated (one argument instead of one per job: packing
-- a thousand arguments was most of the drain's time in redis-py).
--
-- The marker and the XADDs are one atomic step, so a hand-off relayed again
-- (its outbox row survived a crash after this script ran) adds nothing.
-- Returns how many jobs were added.
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local ids = ARGV[2]
for i = 1, #ids, 16 do
  local id = string.sub(ids, i, i + 15)
  redis.call('XADD', KEYS[1], '*', 'r', id)
  redis.call('XADD', KEYS[2], '*', 'r', id)
end
return #ids / 16 * 2
