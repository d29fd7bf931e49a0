-- One escalation notice's deliveries to its target t, all in t's partition (the escalation
-- worker; never replay). KEYS: reach email, sms, webhook; status hash of the message;
-- deliveries email, sms, webhook; the roll-call's unreachable set; its message-id set.
-- ARGV: t, wanted channels csv, request head, mid, status TTL (s), mark ("1": t is the
-- person asked, remember them as unreachable when no wanted channel reaches them), the
-- message id (listed in the message-id set, so the roll-call's deliveries can be read).
-- A channel goes out when it is wanted and t has a contact point for it; its status field
-- is created with HSETNX in this same step, so a notice routed again after a crash appends
-- nothing twice. The request JSON is head .. t.c .. mid .. t .. '","channel":"c"}' (handles
-- are [a-z0-9_], ids digits and [a-z0-9_-]: nothing to escape). → channels that reach t.
local CHANNELS = {'email', 'sms', 'webhook'}
local t, wanted = ARGV[1], ',' .. ARGV[2] .. ','
local reached = 0
for c = 1, 3 do
  local ch = CHANNELS[c]
  if string.find(wanted, ',' .. ch .. ',', 1, true)
      and redis.call('SISMEMBER', KEYS[c], t) == 1 then
    reached = reached + 1
    if redis.call('HSETNX', KEYS[4], t .. ':' .. ch, 'pending|0|') == 1 then
      redis.call('XADD', KEYS[4 + c], '*', 'e',
        ARGV[3] .. t .. '.' .. ch .. ARGV[4] .. t .. '","channel":"' .. ch .. '"}')
    end
  end
end
if reached > 0 then
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  redis.call('SADD', KEYS[9], ARGV[7])
  redis.call('EXPIRE', KEYS[9], ARGV[5])
elseif ARGV[6] == '1' then
  redis.call('SADD', KEYS[8], t)
end
return reached
