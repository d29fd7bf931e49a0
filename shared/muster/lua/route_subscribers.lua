-- KEYS: subscribers hash (keys.subscribers, partition q), the post's status hash in q, then
-- the deliveries streams of q for email, sms, webhook
-- ARGV: cursor, batch, head, mid, status ttl, the post's components (`,a,b,` or '')
-- → next cursor ("0" when done). One request per active subscription the post is for: a
-- subscription of everything, or a post naming no component, or one naming a component the
-- subscription chose. The status field is created with HSETNX, so a re-run appends nothing.
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local head, mid, wanted = ARGV[3], ARGV[4], ARGV[6]
local STREAMS = {email = 3, sms = 4, webhook = 5}
local added = 0
for i = 1, #fields, 2 do
  local f, entry = fields[i], fields[i + 1]
  local bar = string.find(entry, '|', 1, true)
  local ch, chosen = string.sub(entry, 1, bar - 1), string.sub(entry, bar + 1)
  local matches = chosen == '' or wanted == ''
  if not matches then
    for name in string.gmatch(string.sub(wanted, 2), '([^,]*),') do
      if string.find(chosen, ',' .. name .. ',', 1, true) then
        matches = true
        break
      end
    end
  end
  local stream = STREAMS[ch]
  if matches and stream and redis.call('HSETNX', KEYS[2], f .. ':' .. ch, 'pending|0|') == 1 then
    redis.call('XADD', KEYS[stream], '*', 'e',
      head .. f .. '.' .. ch .. mid .. f .. '","channel":"' .. ch .. '"}')
    added = added + 1
  end
end
if added > 0 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
return page[1]
