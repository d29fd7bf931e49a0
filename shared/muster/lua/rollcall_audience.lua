-- One page of a roll-call's audience walk in one partition q (timeline worker, with the
-- post's fan-out; never in replay). KEYS: followers hash of the account (members, or
-- externals), audience set, event log of q.
-- ARGV: cursor, batch, author, follows prefix of q, account, event head, event tail.
-- Each follower who still follows the account (their follow record, as routing reads it)
-- and is not the author joins the audience; those who were not in it yet are named in one
-- RollCallAudienceRecorded, head .. '"a","b"' .. tail, appended in this same step (handles
-- are [a-z0-9_]: nothing to escape). A page walked again after a crash appends nobody twice.
-- → next cursor ("0" when done).
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local author, follows, account = ARGV[3], ARGV[4], ARGV[5]
local added = {}
for i = 1, #fields, 2 do
  local f = fields[i]
  if f ~= author and redis.call('HGET', follows .. f, account)
      and redis.call('SADD', KEYS[2], f) == 1 then
    added[#added + 1] = '"' .. f .. '"'
  end
end
if #added > 0 then
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[6] .. table.concat(added, ',') .. ARGV[7])
end
return page[1]
