-- One page of a roll-call's audience walk in one partition q (timeline worker, with the
-- post's fan-out). KEYS: followers hash of the account (members, or externals), audience set.
-- ARGV: cursor, batch, author, follows prefix of q, account.
-- Adds each follower who still follows the account (their follow record, as routing reads
-- it) and is not the author; SADD makes a walk run again after a crash add nobody twice.
-- → next cursor ("0" when done).
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local author, follows, account = ARGV[3], ARGV[4], ARGV[5]
local found = {}
for i = 1, #fields, 2 do
  local f = fields[i]
  if f ~= author and redis.call('HGET', follows .. f, account) then
    found[#found + 1] = f
  end
end
for i = 1, #found, 1000 do
  redis.call('SADD', KEYS[2], unpack(found, i, math.min(i + 999, #found)))
end
return page[1]
