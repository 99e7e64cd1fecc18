-- What became of one admission call (admit.lua) whose reply a door did not get.
--
-- A door that sent a call and then timed out, or lost the connection, does
-- not know whether Redis ran it. It asks here, on another connection. Either
-- the call ran, and its record holds its replies, or it has not run yet, and
-- then it never will: the fence set here makes admit.lua refuse it, so the
-- door may truthfully answer that nothing was stored. One script, so the
-- answer and the fence are one atomic step: the call runs either wholly
-- before it (and is found) or after it (and is refused).
--
-- KEYS[1]  the call's outcome record
-- ARGV[1]  how long the fence is kept (seconds)
--
-- Returns the call's replies as admit.lua returned them, or nil: not run,
-- and it never will.

local known = redis.call('GET', KEYS[1])
if known == 'fenced' then
  return false
elseif known then
  return cmsgpack.unpack(known)
end
redis.call('SET', KEYS[1], 'fenced', 'EX', ARGV[1])
return false
