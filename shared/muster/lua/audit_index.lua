-- KEYS: audit_events(p) (routes the call to the partition's slot)
-- ARGV: audit_index(p), msgpack list: per event id, payload, k, then k zset keys (type, accounts)
-- (one msgpack argument instead of thousands: packing arguments costs the client more than
-- Redis spends applying them)
local all, store = ARGV[1], KEYS[1]
local items = cmsgpack.unpack(ARGV[2])
local i, n = 1, #items
while i <= n do
  local id, k = items[i], items[i + 2]
  redis.call('HSET', store, id, items[i + 1])
  redis.call('ZADD', all, 0, id)
  for j = i + 3, i + 2 + k do redis.call('ZADD', items[j], 0, id) end
  i = i + 3 + k
end
return 1
