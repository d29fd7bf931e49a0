-- KEYS: delayed set, deliveries stream (same partition)   ARGV: now (ms), limit
-- → how many were moved
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for i = 1, #due do
  redis.call('XADD', KEYS[2], '*', 'e', due[i])
end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return #due
