-- The one channel-merge rule: the channels in either csv list, in `order` (a csv of every
-- channel, keys.CHANNELS), as a Lua list. An enrolment adds its channels to a follow's.
local function merge_channels(a, b, order)
  local chosen = {}
  for c in string.gmatch(a, '[^,]+') do chosen[c] = true end
  for c in string.gmatch(b, '[^,]+') do chosen[c] = true end
  local merged = {}
  for c in string.gmatch(order, '[^,]+') do
    if chosen[c] then merged[#merged + 1] = c end
  end
  return merged
end

-- The channels csv of a follow record ("channels|mandatory"), '' when there is none.
local function record_channels(record)
  if not record then return '' end
  return string.sub(record, 1, string.find(record, '|', 1, true) - 1)
end
