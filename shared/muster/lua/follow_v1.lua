--! include channels
-- A v1 follow change (before seq) applied to the write side, in order (writeside.py).
-- KEYS: the follower's follows hash
-- ARGV: op, followed handle, channels csv, mandatory (1/0), channel order csv
-- op "channels": the new channels, the record's mandatory flag kept;
-- op "enrol": channels merged with the record's, mandatory the enrolment's.
local current = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[1] == 'channels' then
  local mandatory = '0'
  if current then
    mandatory = string.sub(current, string.find(current, '|', 1, true) + 1)
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. mandatory)
  return 1
end
local merged = merge_channels(ARGV[3], record_channels(current), ARGV[5])
redis.call('HSET', KEYS[1], ARGV[2], table.concat(merged, ',') .. '|' .. ARGV[4])
return 1
