-- Read a wave's line at one instant: its state hash, the pre-queue's size and the
-- positions past the served counter whose holders left.
--
-- KEYS[1]: the wave's state hash; KEYS[2]: its draw; KEYS[3]: its gone positions
-- (queueing/keys.py WaveKeys; one hash tag). Returns {state as a flat list of
-- field, value; ZCARD draw; ZCOUNT gone (served +inf}: one script, so a tick of
-- the line between the reads cannot skew the count.
local served = redis.call('HGET', KEYS[1], 'served') or '0'
return {redis.call('HGETALL', KEYS[1]), redis.call('ZCARD', KEYS[2]),
        redis.call('ZCOUNT', KEYS[3], '(' .. served, '+inf')}
