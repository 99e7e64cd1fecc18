-- Take or renew a drain worker's lease on one partition.
--
-- KEYS[1]: the partition's lease; ARGV[1]: the worker's name; ARGV[2]: how
-- long the lease lasts unless renewed (ms); ARGV[3]: 1 to take or renew it,
-- 0 to give it up.
-- Returns 1 when the worker holds the lease after the call, else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[3] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
