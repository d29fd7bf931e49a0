"""Lua scripts for the writes on hot or bulk paths: check and append in one atomic step.

Every key a script touches is passed in KEYS and shares the partition's hash tag, so each
script runs in one slot on Redis Cluster. Other writes use WATCH/MULTI (writes.transact).
"""

from __future__ import annotations

# KEYS: stream, posters set of the posting account, [idempotency key]
# ARGV: event payload, check poster (1/0), caller, fingerprint, response, ttl seconds
# → {"ok", entry id} | {"replay", response} | {"conflict"} | {"forbidden"}
APPEND_CHECKED = """
if #KEYS >= 3 then
  local previous = redis.call('GET', KEYS[3])
  if previous then
    local cut = string.find(previous, '\\n', 1, true)
    if string.sub(previous, 1, cut - 1) == ARGV[4] then
      return {'replay', string.sub(previous, cut + 1)}
    end
    return {'conflict'}
  end
end
if ARGV[2] == '1' and redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then
  return {'forbidden'}
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
if #KEYS >= 3 then
  redis.call('SET', KEYS[3], ARGV[4] .. '\\n' .. ARGV[5], 'EX', tonumber(ARGV[6]))
end
return {'ok', id}
"""

# KEYS: follower's follows hash, follower's stream
# ARGV: followed handle, enrolment channels csv, mandatory (1/0), event payload, channel order csv
# The follow keeps the channels the person chose and gains the enrolment's; `mandatory` is the
# admin's latest word. → the merged record
ENROL = """
local function set_of(csv)
  local s = {}
  for c in string.gmatch(csv, '[^,]+') do s[c] = true end
  return s
end
local chosen = set_of(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local cut = string.find(current, '|', 1, true)
  for c, _ in pairs(set_of(string.sub(current, 1, cut - 1))) do chosen[c] = true end
end
local merged = {}
for c in string.gmatch(ARGV[5], '[^,]+') do
  if chosen[c] then table.insert(merged, c) end
end
local record = table.concat(merged, ',') .. '|' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], record)
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
return record
"""
