-- KEYS: one key of the partition   ARGV: msgpack list of hash keys → their HLENs
local names = cmsgpack.unpack(ARGV[1])
local out = {}
for i = 1, #names do out[i] = redis.call('HLEN', names[i]) end
return out
