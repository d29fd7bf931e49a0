-- KEYS: the partition's stream, its archived-ids set   ARGV: msgpack list of entry id, event
-- (text), event id, ... — XADD each under its id, and note the event as archived.
local items = cmsgpack.unpack(ARGV[1])
for i = 1, #items, 3 do
  redis.call('XADD', KEYS[1], items[i], 'e', items[i + 1])
  redis.call('ZADD', KEYS[2], 0, items[i + 2])
end
return #items / 3
