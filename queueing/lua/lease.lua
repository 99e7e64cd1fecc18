-- Take, renew or give up a worker's lease on one partition.
--
-- KEYS[1]: the partition's lease; KEYS[2]: its fencing epoch (same hash tag).
-- ARGV[1]: the worker's name; ARGV[2]: how long the lease lasts unless
-- renewed (ms); ARGV[3]: 1 to take or renew it, 0 to give it up.
-- Returns the lease's epoch when the worker holds it after the call, else 0.
--
-- Each take raises the epoch; a renewal keeps it. The drain writes its epoch
-- into PostgreSQL with every batch, which refuses an epoch below the highest
-- it has seen (database/sql/store.sql), so a worker that lost its lease
-- cannot write once its successor has. The epoch is at least the server's
-- clock in ms: if the epoch key itself were lost (a failover before it
-- replicated, a restore), a new take still lands above every epoch issued
-- before, however many takes that was.
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
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if not holder or epoch == 0 then
  local now = redis.call('TIME')
  epoch = math.max(epoch + 1, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  redis.call('SET', KEYS[2], string.format('%d', epoch))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return epoch
