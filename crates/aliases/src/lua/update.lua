-- One atomic update of an alias hash, and the record after it.
-- KEYS[1]: the alias hash.
-- ARGV[1]: "retire" (ARGV[2] ms, ARGV[3] reason), "restore", or
--          "reject_foreign" (ARGV[2] "0" or "1").
-- Returns {0, {}} when there is no such alias, {1, fields} when nothing
-- changed, {2, fields} when it changed; fields as HGETALL gives them.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return {0, {}}
end
local op = ARGV[1]
local changed = 0
if op == 'retire' then
  if redis.call('HEXISTS', key, 'retired') == 0 then
    redis.call('HSET', key, 'retired', ARGV[2], 'reason', ARGV[3])
    changed = 1
  end
elseif op == 'restore' then
  if redis.call('HDEL', key, 'retired', 'reason') > 0 then
    changed = 1
  end
elseif op == 'reject_foreign' then
  if redis.call('HGET', key, 'reject_foreign') ~= ARGV[2] then
    redis.call('HSET', key, 'reject_foreign', ARGV[2])
    changed = 1
  end
else
  return redis.error_reply('unknown alias update ' .. op)
end
return {changed + 1, redis.call('HGETALL', key)}
