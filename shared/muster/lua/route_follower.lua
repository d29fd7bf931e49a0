-- KEYS: the follower's follows hash (keys.follows, partition q), then the 8 routing keys of q
-- ARGV: follower, author, critical (1|0), head, mid, status ttl, followed account
-- → requests appended. One post to one follower, on the channels their follow record holds
-- now (a late follow); none if they no longer follow.
--! include channels

--! include route_prelude

local f = ARGV[1]
local record = redis.call('HGET', KEYS[1], ARGV[7])
if not record then return 0 end
local chosen = record_channels(record)
local critical, head, mid = ARGV[3] == '1', ARGV[4], ARGV[5]
local K = 2
if f ~= ARGV[2] then

--! include route_one

end
if added > 0 then redis.call('EXPIRE', KEYS[K + 4], ARGV[6]) end
return added
