-- The email index entry of one account (keys.emails): drop the entry of the address the
-- account hash holds now, add the one of the address it is about to hold. Queued by
-- writeside.py before the writes of AccountCreated / ContactPointsChanged, in the same MULTI.
-- KEYS[1] account hash, KEYS[2] the partition's email index (same slot).
-- ARGV[1] handle, ARGV[2] records.email_entry(new address, handle), or '' when it has none.
-- The old entry is built here as records.email_entry builds it: string.lower is the C
-- locale's, ASCII letters only, as records.email_key (tests/test_writeside.py checks).
local old = redis.call('HGET', KEYS[1], 'email')
if old then
    redis.call('ZREM', KEYS[2], string.lower(old) .. '\n' .. ARGV[1])
end
if ARGV[2] ~= '' then
    redis.call('ZADD', KEYS[2], 0, ARGV[2])
end
return 0
