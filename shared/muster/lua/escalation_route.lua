-- A batch of escalation notices' deliveries, all to targets of one partition (the escalation
-- worker; never replay). KEYS: reach email, sms, webhook; deliveries email, sms, webhook; the
-- roll-call's unreachable set; its message-id set; then the status hash of each notice's
-- message, in ARGV's order.
-- ARGV: status TTL (s), then per notice 6 values: target t, wanted channels csv, request
-- head, mid, message id, mark ("1": t is the person asked, remember them as unreachable when
-- no wanted channel reaches them).
-- A channel goes out when it is wanted and t has a contact point for it; its status field
-- is created with HSETNX in this same step, so a notice routed again after a crash appends
-- nothing twice. The request JSON is head .. t.c .. mid .. t .. '","channel":"c"}' (handles
-- are [a-z0-9_], ids digits and [a-z0-9_-]: nothing to escape); the message id goes into
-- the message-id set, so the roll-call's deliveries can be read. → requests appended.
local CHANNELS = {'email', 'sms', 'webhook'}
local ttl = ARGV[1]
local appended = 0
for n = 0, (#ARGV - 1) / 6 - 1 do
  local a = 2 + n * 6
  local t, wanted = ARGV[a], ',' .. ARGV[a + 1] .. ','
  local status = KEYS[9 + n]
  local reached = 0
  for c = 1, 3 do
    local ch = CHANNELS[c]
    if string.find(wanted, ',' .. ch .. ',', 1, true)
        and redis.call('SISMEMBER', KEYS[c], t) == 1 then
      reached = reached + 1
      if redis.call('HSETNX', status, t .. ':' .. ch, 'pending|0|') == 1 then
        redis.call('XADD', KEYS[3 + c], '*', 'e',
          ARGV[a + 2] .. t .. '.' .. ch .. ARGV[a + 3] .. t .. '","channel":"' .. ch .. '"}')
        appended = appended + 1
      end
    end
  end
  if reached > 0 then
    redis.call('EXPIRE', status, ttl)
    redis.call('SADD', KEYS[8], ARGV[a + 4])
  elseif ARGV[a + 5] == '1' then
    redis.call('SADD', KEYS[7], t)
  end
end
redis.call('EXPIRE', KEYS[8], ttl)
return appended
