-- Creates an alias unless its address exists (one host wins).
-- KEYS[1]: the alias hash, KEYS[2]: the index set of addresses.
-- ARGV[1]: the address; ARGV[2..]: field, value, field, value, ...
-- Returns 1 when created, 0 when the address existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
