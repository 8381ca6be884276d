-- Sets a ban by hand, carrying the remembered strikes; see StateStore::ban.
-- KEYS[1]: ban, KEYS[2]: strikes (formats as in strike.lua)
-- ARGV: now (ms), until (ms), reason
local now = tonumber(ARGV[1])
local until_ms = tonumber(ARGV[2])
if until_ms <= now then
  return 0
end
local strikes = 0
local remembered = redis.call('GET', KEYS[2])
if remembered then
  local n, forget = string.match(remembered, '^(%d+) (%d+)$')
  if n and tonumber(forget) > now then
    strikes = tonumber(n)
  end
end
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. string.format('%.0f', strikes) .. ' ' .. ARGV[3],
  'PX', string.format('%.0f', until_ms - now))
return 1
