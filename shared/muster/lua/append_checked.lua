-- KEYS: stream, posters set of the posting account, [idempotency key]
-- ARGV: event payload, check poster (1/0), caller, fingerprint, response, ttl seconds
-- → {"ok", entry id} | {"replay", response} | {"conflict"} | {"forbidden"}
if #KEYS >= 3 then
  local previous = redis.call('GET', KEYS[3])
  if previous then
    local cut = string.find(previous, '\n', 1, true)
    -- no answer yet: the key is claimed by a request posting as an account in another
    -- partition (publishing.py), so with another body: this one differs
    if not cut then return {'conflict'} end
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
  redis.call('SET', KEYS[3], ARGV[4] .. '\n' .. ARGV[5], 'EX', tonumber(ARGV[6]))
end
return {'ok', id}
