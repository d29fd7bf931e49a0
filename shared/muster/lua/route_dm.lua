-- KEYS: dm channels hash, then the 8 routing keys of the recipient's partition
-- ARGV: recipient, head, mid, status ttl  → requests appended
--! include route_prelude

local f, head, mid = ARGV[1], ARGV[2], ARGV[3]
local chosen = redis.call('HGET', KEYS[1], f) or 'app,email'
local critical = false
local K = 2

--! include route_one

if added > 0 then redis.call('EXPIRE', KEYS[K + 4], ARGV[4]) end
return added
