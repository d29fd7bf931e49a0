-- KEYS: status hash, deliveries stream   ARGV: field, expected status ('' = none), new
-- status, request, ttl  → 1 if re-issued. Only the status seen when the re-drive was read
-- is replaced, so a re-driven entry handled twice re-issues once.
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
return 1
