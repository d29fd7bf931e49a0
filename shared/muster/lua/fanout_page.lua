-- One page of one post's fan-out, as a Lua function, so that the same code runs alone
-- (_FANOUT) and inside batch.py's script, which fans a whole run of posts out in one call.
-- routing.ROUTED_FANOUT repeats this home insert (plus delivery routing) for partitions where
-- someone is reachable off-app: change both together.
local function fanout_page(source, cursor, batch, id, prefix, cap)
  local page = redis.call('HSCAN', source, cursor, 'COUNT', batch)
  local fields = page[2]
  for i = 1, #fields, 2 do
    local home = prefix .. fields[i]
    redis.call('ZADD', home, 0, id)
    if redis.call('ZCARD', home) > cap then
      redis.call('ZREMRANGEBYRANK', home, cap, -1)
    end
  end
  return page[1]
end
