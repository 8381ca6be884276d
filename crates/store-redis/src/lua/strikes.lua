-- Shared by strike.lua and ban.lua (prepended to each).
-- The strike count remembered under `key` ("COUNT FORGET_AT_MS") at `now`.
local function remembered_strikes(key, now)
  local remembered = redis.call('GET', key)
  if remembered then
    local n, forget = string.match(remembered, '^(%d+) (%d+)$')
    if n and tonumber(forget) > now then
      return tonumber(n)
    end
  end
  return 0
end

