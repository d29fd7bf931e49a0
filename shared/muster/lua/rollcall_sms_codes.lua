-- The reply codes of one (roll-call, recipient) on one phone (muster.answerlinks; the
-- delivery worker calls it before it sends the SMS). KEYS: the phone's codes hash
-- (keys.rollcall_sms_codes). ARGV: `<rollcall>|<recipient>`, how many options, expires_ms,
-- now_ms. Values are records.SmsCodeBlock as `first|count|expires_ms`.
-- The same (roll-call, recipient) keeps its block (a resend says the same codes; its expiry
-- moves later if this one is later). A new one gets the codes after the highest still in
-- use, blocks past their expiry dropped first, so codes start at 1 again once every
-- roll-call the phone had is over, and two open ones never share a code.
-- → the block's first code.
local codes, field = KEYS[1], ARGV[1]
local count, expires, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local function parse(raw)
  local first, n, until_ms = string.match(raw, '^(%d+)|(%d+)|(%d+)$')
  return tonumber(first), tonumber(n), tonumber(until_ms)
end

local first
local held = redis.call('HGET', codes, field)
if held then
  local f, n, until_ms = parse(held)
  if until_ms > now then
    first = f
    if expires > until_ms then
      redis.call('HSET', codes, field, f .. '|' .. n .. '|' .. string.format('%d', expires))
    end
  end
end
if not first then
  local top = 0
  local all = redis.call('HGETALL', codes)
  for i = 1, #all, 2 do
    local f, n, until_ms = parse(all[i + 1])
    if until_ms <= now then
      redis.call('HDEL', codes, all[i])
    elseif f + n - 1 > top then
      top = f + n - 1
    end
  end
  first = top + 1
  redis.call('HSET', codes, field, first .. '|' .. count .. '|' .. string.format('%d', expires))
end
if redis.call('PEXPIRETIME', codes) < expires then
  redis.call('PEXPIREAT', codes, string.format('%d', expires))
end
return first
