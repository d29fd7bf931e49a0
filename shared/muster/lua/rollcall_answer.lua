-- A roll-call answer applied to one partition's share of a roll-call (writeside.py; the api
-- and replay call it alike). KEYS: answers hash, counts hash (one partition).
-- ARGV "answer": recipient, event id, record JSON (records.RollCallAnswer), option, kind,
--   channel, late (1/0), suspect (1/0). The latest answer replaces the person's earlier one:
--   the old one's counts go down, the new one's up, in this one step, so counts always add
--   up to the answers hash. An event no newer than the stored one is skipped (applied twice),
--   and so is a suspect answer over one that is not: a link scanner coming back after the
--   person answered never undoes their answer (the event stays in the log, as history).
-- ARGV "handled": recipient, unhandled tail, handled tail. A current, unhandled `help`
--   answer becomes handled and leaves help_open.
-- → 1 when it changed something, 0 when not.
local answers, counts = KEYS[1], KEYS[2]
local op, recipient = ARGV[1], ARGV[2]

local function newer(a, b)  -- decimal snowflakes as strings: longer, or longer-equal and greater
  if #a ~= #b then return #a > #b end
  return a > b
end

local old_raw = redis.call('HGET', answers, recipient)
local old = old_raw and cjson.decode(old_raw)

local function count(record, by)
  redis.call('HINCRBY', counts, 'opt:' .. record.option, by)
  redis.call('HINCRBY', counts, 'ch:' .. record.channel, by)
  if record.late then redis.call('HINCRBY', counts, 'late', by) end
  if record.suspect then redis.call('HINCRBY', counts, 'suspect', by) end
  if record.kind == 'help' and not record.handled then
    redis.call('HINCRBY', counts, 'help_open', by)
  end
end

if op == 'answer' then
  local id = ARGV[3]
  if old and not newer(id, old.event) then return 0 end
  if old and not old.suspect and ARGV[9] == '1' then return 0 end
  local new = {option = ARGV[5], kind = ARGV[6], channel = ARGV[7],
               late = ARGV[8] == '1', suspect = ARGV[9] == '1', handled = false}
  if old then count(old, -1) else redis.call('HINCRBY', counts, 'answered', 1) end
  count(new, 1)
  redis.call('HSET', answers, recipient, ARGV[4])
  return 1
end

-- handled
if not old or old.kind ~= 'help' or old.handled then return 0 end
local tail = ARGV[3]
if string.sub(old_raw, -#tail) ~= tail then
  return redis.error_reply('rollcall record does not end with its handled field')
end
redis.call('HSET', answers, recipient, string.sub(old_raw, 1, #old_raw - #tail) .. ARGV[4])
redis.call('HINCRBY', counts, 'help_open', -1)
return 1
