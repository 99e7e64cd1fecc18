-- Audit a read unless the same read was audited within the window.
--
-- KEYS[1]: the audit stream; KEYS[2]: the read's mark (same hash tag).
-- ARGV[1]: the window in milliseconds; ARGV[2..]: the entry's fields and values.
-- The entry first, the mark after it: a script is not rolled back when a
-- command fails, so a failed XADD must leave no mark (the read is refused
-- and the next one tries again), never a read taken for audited without an
-- entry. Returns the new entry's id, or false when the read was audited
-- within the window.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return id
