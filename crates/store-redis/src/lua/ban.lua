-- Sets a ban by hand, carrying the remembered strikes; see StateStore::ban.
-- KEYS[1]: ban, KEYS[2]: strikes (formats as in strike.lua)
-- ARGV: now (ms), until (ms), reason
local now = tonumber(ARGV[1])
local until_ms = tonumber(ARGV[2])
if until_ms <= now then
  return 0
end
local strikes = remembered_strikes(KEYS[2], now)
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. string.format('%.0f', strikes) .. ' ' .. ARGV[3],
  'PX', string.format('%.0f', until_ms - now))
return 1
