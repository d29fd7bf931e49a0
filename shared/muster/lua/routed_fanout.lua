-- KEYS: followers hash (one partition q), then the 8 routing keys of q (see route_one.lua)
-- ARGV: cursor, batch, home member, home prefix, cap, homes (1|0), author, critical (1|0),
-- head, mid, status ttl, follows prefix of q, the followed account
-- → next cursor ("0" when done). Same home insert as fanout._FANOUT, plus routing on the
-- channels of each follower's current follow record (none: they unfollowed, no routing).
--! include channels

--! include route_prelude

local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local id, prefix, cap = ARGV[3], ARGV[4], tonumber(ARGV[5])
local homes, author, critical = ARGV[6] == '1', ARGV[7], ARGV[8] == '1'
local head, mid = ARGV[9], ARGV[10]
local follows, account = ARGV[12], ARGV[13]
local K = 2
for i = 1, #fields, 2 do
  local f = fields[i]
  if homes then
    local home = prefix .. f
    redis.call('ZADD', home, 0, id)
    if redis.call('ZCARD', home) > cap then
      redis.call('ZREMRANGEBYRANK', home, cap, -1)
    end
  end
  local record = f ~= author and redis.call('HGET', follows .. f, account)
  if record then
    local chosen = record_channels(record)

--! include route_one

  end
end
if added > 0 then redis.call('EXPIRE', KEYS[K + 4], ARGV[11]) end
return page[1]
