--! include channels
-- Enrol one person: merge the enrolment's channels into their follow record, take the
-- pair's next seq, append FollowerEnrolled stating both — one atomic step (writeside.py).
-- KEYS: follows hash, follow seq hash, stream (all the follower's partition)[, done set]
-- ARGV: followed handle, enrolment channels csv, mandatory (1/0), payload head, payload
--       tail (the event's JSON around `"follow_channels":…,"seq":…`), channel order csv
--       [, follower: with KEYS[4], skip if already in the set, else add it]
-- → the seq taken, or 0 when the done set says this enrolment already enrolled them
if KEYS[4] then
  if redis.call('SADD', KEYS[4], ARGV[7]) == 0 then return 0 end
end
local merged = merge_channels(ARGV[2], record_channels(redis.call('HGET', KEYS[1], ARGV[1])), ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], table.concat(merged, ',') .. '|' .. ARGV[3])
local seq = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local list = '[]'
if #merged > 0 then list = '["' .. table.concat(merged, '","') .. '"]' end
redis.call('XADD', KEYS[3], '*', 'e',
  ARGV[4] .. '"follow_channels":' .. list .. ',"seq":' .. seq .. ARGV[5])
return seq
