-- One wave's line (docs/waiting-room.md): every change and read of it, atomically.
--
-- KEYS (queueing/keys.py, WaveKeys.all(): one hash tag, one cluster slot)
--   [1] state hash   [2] draw zset   [3] tickets hash   [4] seen zset
--   [5] gone zset    [6] gone_log list   [7] turns zset
-- ARGV[1] the call: 'tick' | 'join' | 'lookup' | 'leave' | 'registered'; joins and
-- look-ups come in groups (one call for every ticket that waited for the last one)
--
-- Every call first brings the line up to the Redis server's clock: at the
-- first call at or after `opens_at` the pre-queue is drawn (its size becomes
-- `drawn`; positions 1..drawn are the draw zset's ranks, which sorts by lottery
-- key). Only 'tick' advances the served counter and sweeps idle tickets.
--
-- Ticket fields in KEYS[3]: p:<tid> position (arrivals after the opening and
-- drawn joiners once located), m:<tid> the pre-queue member, j:<tid> joined at
-- (Unix s), c:<tid> the idempotency key that claimed its turn, r:<tid> the
-- registration id admitted with it, g:<tid> gone (left
-- or skipped; a later join queues again at the back).

local mode = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local st = redis.call('HMGET', KEYS[1], 'prequeue_from', 'opens_at', 'closes_at', 'drawn',
  'tail', 'served')
local opens_at = tonumber(st[2]) or 0
local closes_at = tonumber(st[3])
local drawn = tonumber(st[4])
local tail = tonumber(st[5]) or 0
local served = tonumber(st[6]) or 0

if not drawn and now >= opens_at then
  drawn = redis.call('ZCARD', KEYS[2])
  if tail < drawn then tail = drawn end
  redis.call('HSET', KEYS[1], 'drawn', drawn, 'tail', tail)
end

local phase = 'open'
if now < opens_at then
  phase = 'prequeue'
elseif closes_at and now >= closes_at then
  phase = 'closed'
end

-- A ticket's position: its own, or its rank in the draw (stored once found).
local function position_of(tid, member)
  local p = tonumber(redis.call('HGET', KEYS[3], 'p:' .. tid))
  if p then return p end
  if drawn and member ~= '' then
    local rank = redis.call('ZRANK', KEYS[2], member)
    if rank and rank < drawn then
      redis.call('HSET', KEYS[3], 'p:' .. tid, rank + 1)
      return rank + 1
    end
  end
  return nil
end

-- When the served counter reached a position (ms), or nil if not yet or forgotten.
local function turn_of(position)
  if position > served then return nil end
  local first = redis.call('ZRANGEBYSCORE', KEYS[7], position, '+inf', 'LIMIT', 0, 1)
  if first[1] then
    return tonumber(string.match(first[1], ':(%d+)$'))
  end
  return nil
end

local function mark_gone(tid, position)
  redis.call('HSET', KEYS[3], 'g:' .. tid, '1')
  redis.call('ZREM', KEYS[4], tid)
  if position and position > served and redis.call('ZADD', KEYS[5], 'NX', position, position) == 1 then
    redis.call('RPUSH', KEYS[6], position)
  end
end

local function join(tid, member, turn_seconds)
  local registered = redis.call('HGET', KEYS[3], 'r:' .. tid)
  if registered then
    return {'registered', position_of(tid, member) or 0,
      redis.call('HGET', KEYS[3], 'j:' .. tid) or '0', registered}
  end
  if phase == 'closed' then return {'closed', 0, '0'} end
  local gone = redis.call('HGET', KEYS[3], 'g:' .. tid)
  if gone then
    redis.call('HDEL', KEYS[3], 'g:' .. tid, 'p:' .. tid, 'j:' .. tid)
  end
  redis.call('HSETNX', KEYS[3], 'j:' .. tid, string.format('%d', now))
  local joined = redis.call('HGET', KEYS[3], 'j:' .. tid)
  redis.call('ZADD', KEYS[4], now, tid)
  if phase == 'prequeue' then
    redis.call('ZADD', KEYS[2], 0, member)
    redis.call('HSET', KEYS[3], 'm:' .. tid, member)
    return {'prequeue', 0, joined}
  end
  local position = nil
  if not gone then
    position = position_of(tid, member)
    if position and position <= served then
      local turn = turn_of(position)
      if not turn or now_ms - turn > turn_seconds * 1000 then
        position = nil  -- its turn passed: queue again at the back
        redis.call('HDEL', KEYS[3], 'p:' .. tid)
        joined = string.format('%d', now)
        redis.call('HSET', KEYS[3], 'j:' .. tid, joined)
      end
    end
  end
  if not position then
    tail = redis.call('HINCRBY', KEYS[1], 'tail', 1)
    position = tail
    redis.call('HSET', KEYS[3], 'p:' .. tid, position)
  end
  return {'waiting', position, joined}
end

local function lookup(tid, member)
  local position = position_of(tid, member) or 0
  redis.call('ZADD', KEYS[4], 'XX', now, tid)
  local turn = 0
  if position > 0 then turn = turn_of(position) or 0 end
  return {redis.call('HGET', KEYS[3], 'r:' .. tid) or '', position,
    redis.call('HEXISTS', KEYS[3], 'g:' .. tid), turn,
    redis.call('HGET', KEYS[3], 'j:' .. tid) or '0'}
end

if mode == 'join' or mode == 'lookup' then
  -- ARGV[2] turn_seconds; then (ticket id, its lottery member or '') pairs, one
  -- per ticket of the group. One reply per ticket:
  --   join:   {state, position, joined at[, registration id]}, state one of
  --           'registered', 'closed', 'prequeue', 'waiting'
  --   lookup: {registration id or '', position or 0, gone 0/1, turn ms or 0, joined at}
  local turn_seconds = tonumber(ARGV[2])
  local replies = {}
  for i = 3, #ARGV, 2 do
    if mode == 'join' then
      replies[#replies + 1] = join(ARGV[i], ARGV[i + 1], turn_seconds)
    else
      replies[#replies + 1] = lookup(ARGV[i], ARGV[i + 1])
    end
  end
  return replies

elseif mode == 'leave' then
  -- ARGV[2] ticket id, ARGV[3] its lottery member (or '').
  local tid, member = ARGV[2], ARGV[3]
  if redis.call('HEXISTS', KEYS[3], 'r:' .. tid) == 1 then return 0 end
  if phase == 'prequeue' then
    redis.call('ZREM', KEYS[2], member)
    mark_gone(tid, nil)
  else
    mark_gone(tid, position_of(tid, member))
  end
  redis.call('HINCRBY', KEYS[1], 'left', 1)
  return 1

elseif mode == 'registered' or mode == 'claim' then
  -- Pairs from ARGV[3] (ARGV[2] unused): one reply per ticket.
  --   registered: (ticket id, the registration id admitted with it) -> 1
  --   claim: (ticket id, the idempotency key its registration is admitted under) ->
  --          {1} the ticket is this key's, or {0, registration id or ''}: another
  --          key's (one ticket, one registration; its own key retries freely)
  local replies = {}
  for i = 3, #ARGV, 2 do
    local tid = ARGV[i]
    if mode == 'registered' then
      if redis.call('HSETNX', KEYS[3], 'r:' .. tid, ARGV[i + 1]) == 1 then
        redis.call('HINCRBY', KEYS[1], 'used', 1)
      end
      redis.call('ZREM', KEYS[4], tid)
      replies[#replies + 1] = 1
    else
      local holder = redis.call('HGET', KEYS[3], 'c:' .. tid)
      if not holder then
        redis.call('HSET', KEYS[3], 'c:' .. tid, ARGV[i + 1])
        replies[#replies + 1] = {1}
      elseif holder == ARGV[i + 1] then
        replies[#replies + 1] = {1}
      else
        replies[#replies + 1] = {0, redis.call('HGET', KEYS[3], 'r:' .. tid) or ''}
      end
    end
  end
  return replies

elseif mode == 'release' then
  -- ARGV[2] ticket id, ARGV[3] the key that claimed it: its admission certainly failed,
  -- so another request may take the turn.
  if redis.call('HGET', KEYS[3], 'c:' .. ARGV[2]) == ARGV[3] then
    redis.call('HDEL', KEYS[3], 'c:' .. ARGV[2])
  end
  return 1
end

-- 'tick': ARGV[2] release rate (positions a second; 0 pauses), ARGV[3]
-- idle_seconds, ARGV[4] turn_seconds, ARGV[5] the highest tail and ARGV[6] the
-- highest served this door has seen, ARGV[7] how much of gone_log the door has,
-- ARGV[8] the highest served value of the turns the door has, ARGV[9..] ticket
-- ids polled at this door since its last tick.
local rate = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local turn_seconds = tonumber(ARGV[4])

-- A failover may have lost the last writes: the line never goes back on what
-- a door has seen, so no position is handed out twice.
local seen_tail, seen_served = tonumber(ARGV[5]), tonumber(ARGV[6])
if seen_tail > tail then tail = seen_tail end
if seen_served > served then served = seen_served end

if #ARGV >= 9 then
  local pairs_ = {}
  for i = 9, #ARGV do
    pairs_[#pairs_ + 1] = now
    pairs_[#pairs_ + 1] = ARGV[i]
    if #pairs_ >= 1000 then
      redis.call('ZADD', KEYS[4], 'XX', unpack(pairs_))
      pairs_ = {}
    end
  end
  if #pairs_ > 0 then redis.call('ZADD', KEYS[4], 'XX', unpack(pairs_)) end
end

local fields = redis.call('HMGET', KEYS[1], 'credit', 'ts')
local credit = tonumber(fields[1]) or 0
local last = tonumber(fields[2]) or now
local before = served
if phase ~= 'prequeue' then
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  local release = credit + elapsed * rate
  local k = math.floor(release)
  credit = release - k
  if k > 0 and served < tail then
    -- Advance over k live positions: gone ones are skipped, not counted.
    local target = served + k
    while target < tail do
      local want = served + k + redis.call('ZCOUNT', KEYS[5], served + 1, target)
      if want == target then break end
      target = want
    end
    if target > tail then target = tail end
    served = target
  end
  -- An empty line banks nothing: whoever joins it later waits for the rate.
  if served >= tail then credit = 0 end
end
redis.call('HSET', KEYS[1], 'served', served, 'tail', tail, 'credit', credit, 'ts', now)
if served > before then
  redis.call('ZADD', KEYS[7], served, served .. ':' .. now_ms)
end
-- Forget turns older than any turn still valid (a minute to spare).
local oldest = redis.call('ZRANGE', KEYS[7], 0, 0)
local guard = 0
while oldest[1] and guard < 100 do
  local at = tonumber(string.match(oldest[1], ':(%d+)$'))
  if at >= now_ms - (turn_seconds + 60) * 1000 then break end
  redis.call('ZREM', KEYS[7], oldest[1])
  oldest = redis.call('ZRANGE', KEYS[7], 0, 0)
  guard = guard + 1
end

-- Skip whoever was not seen for idle seconds: no longer counted ahead of anyone.
local stale = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - idle, 'LIMIT', 0, 500)
local expired = 0
for _, tid in ipairs(stale) do
  if phase == 'prequeue' then
    local member = redis.call('HGET', KEYS[3], 'm:' .. tid)
    if member then redis.call('ZREM', KEYS[2], member) end
    mark_gone(tid, nil)
  else
    mark_gone(tid, position_of(tid, redis.call('HGET', KEYS[3], 'm:' .. tid) or ''))
  end
  expired = expired + 1
end
if expired > 0 then redis.call('HINCRBY', KEYS[1], 'expired', expired) end

local cursor = tonumber(ARGV[7])
local gone_log = redis.call('LRANGE', KEYS[6], cursor, cursor + 4999)
local waiting = tail - served - redis.call('ZCOUNT', KEYS[5], '(' .. served, '+inf')
local state = redis.call('HMGET', KEYS[1], 'seed', 'expired', 'used', 'left')
return {phase, served, tail, drawn or -1, opens_at, closes_at or 0, state[1] or '',
  cursor + #gone_log, gone_log,
  redis.call('ZRANGEBYSCORE', KEYS[7], '(' .. ARGV[8], '+inf', 'LIMIT', 0, 5000),
  waiting, redis.call('ZCARD', KEYS[2]), tonumber(state[2]) or 0, tonumber(state[3]) or 0,
  tonumber(state[4]) or 0}
