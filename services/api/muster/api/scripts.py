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
