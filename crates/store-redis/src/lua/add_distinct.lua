-- Adds a member to a distinct counter; returns the members in the window.
-- KEYS[1]: the sorted set of members, scored by when each was last added (ms)
-- ARGV: now (ms), window (ms), member, cap (most members kept)
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
if window <= 0 then
  return 0
end
-- Members last added at or before now - window are out of the window.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
-- Keep the latest time of a member (like ZADD GT, which Redis < 6.2 lacks).
local seen = redis.call('ZSCORE', KEYS[1], ARGV[3])
if not seen or tonumber(seen) < now then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
end
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  -- Drop the oldest members (lowest scores, ties by member).
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  n = cap
end
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', window))
return n
