-- Bans unless banned, counting a strike; see StateStore::strike.
-- KEYS[1]: ban, value "UNTIL_MS STRIKES REASON"
-- KEYS[2]: strikes, value "COUNT FORGET_AT_MS"
-- KEYS[3]: the distinct counter, cleared by a new ban
-- ARGV: now (ms), base (ms, >= 1), escalate ("1" or "0"), cap (ms, >= base),
--       forget_after (ms), reason
local now = tonumber(ARGV[1])
local function ms(x) return string.format('%.0f', x) end

local current = redis.call('GET', KEYS[1])
if current then
  local until_ms = tonumber(string.match(current, '^(%d+) '))
  if until_ms and until_ms > now then
    return {0, current}
  end
end

local strikes = remembered_strikes(KEYS[2], now) + 1

-- The same doubling as BanRule::ban_millis.
local base = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
local d = base
if ARGV[3] == '1' then
  for _ = 2, strikes do
    if d >= cap then break end
    d = d * 2
  end
  if d > cap then d = cap end
end

local forget_after = tonumber(ARGV[5])
local value = ms(now + d) .. ' ' .. ms(strikes) .. ' ' .. ARGV[6]
redis.call('SET', KEYS[1], value, 'PX', ms(d))
redis.call('SET', KEYS[2], ms(strikes) .. ' ' .. ms(now + d + forget_after),
  'PX', ms(d + forget_after))
redis.call('DEL', KEYS[3])
return {1, value}
