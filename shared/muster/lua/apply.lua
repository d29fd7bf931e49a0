-- KEYS: one key of the partition (routes the call to its slot)
-- ARGV: cap, fan-out page size, msgpack list of writes, each an op and its operands:
-- S key value | Z key member (score 0) | G key member score (ZADD GT) |
-- H key member (ZADD score 0, then keep the first `cap`: homes hold newest first) |
-- F walk source post-id home-prefix (the first page of a fan-out) |
-- FC applied follower seq target other kind channels order (a follow change, below) |
-- FM guard follower home count members... (a follow's backfill: ZADD them, keep the first
-- `cap`, if `follower` is in hash `guard`) |
-- FX guard other follower authored home count members... (an unfollow: ZREM them if in
-- neither hash, but for the follower's own: those in their `authored` set)
-- → {walk, cursor, ...} for fan-outs that have more pages
--
-- FC compares the change's seq with the pair's last applied (hash `applied`) and applies it
-- only if newer, in the same step: kind S sets the follow's channels in `target` (the
-- followers or external followers hash), U removes it from both; v1 changes (seq 0, applied
-- in log order) E merge an enrolment's channels into the follow's, C set channels where the
-- follow is. FM and FX fill or empty a home only if the follow still is, or still is not,
-- there — so a follow and an unfollow handled at once by two consumers leave the home as
-- the later change says, whichever finishes first.
--! include fanout_page

--! include channels

local cap, page_size = tonumber(ARGV[1]), ARGV[2]
local ops = cmsgpack.unpack(ARGV[3])
local more = {}

local function insert_many(home, from, to)
  for j = from, to, 500 do
    local args = {}
    for k = j, math.min(j + 499, to) do
      args[#args + 1] = 0
      args[#args + 1] = ops[k]
    end
    redis.call('ZADD', home, unpack(args))
  end
  redis.call('ZREMRANGEBYRANK', home, cap, -1)
end

local i, n = 1, #ops
while i <= n do
  local op = ops[i]
  if op == 'S' then
    redis.call('SET', ops[i + 1], ops[i + 2])
    i = i + 3
  elseif op == 'Z' then
    redis.call('ZADD', ops[i + 1], 0, ops[i + 2])
    i = i + 3
  elseif op == 'G' then
    redis.call('ZADD', ops[i + 1], 'GT', ops[i + 3], ops[i + 2])
    i = i + 4
  elseif op == 'H' then
    local home = ops[i + 1]
    redis.call('ZADD', home, 0, ops[i + 2])
    if redis.call('ZCARD', home) > cap then
      redis.call('ZREMRANGEBYRANK', home, cap, -1)
    end
    i = i + 3
  elseif op == 'FC' then
    local applied, f, seq = ops[i + 1], ops[i + 2], tonumber(ops[i + 3])
    local target, other, kind, channels = ops[i + 4], ops[i + 5], ops[i + 6], ops[i + 7]
    local last = redis.call('HGET', applied, f)
    local newer
    if seq > 0 then
      newer = tonumber(last or '0') < seq
      if newer then redis.call('HSET', applied, f, seq) end
    else
      -- v1 (seq 0): in log order, and always before any v2 change of the pair, so one
      -- handled after a v2 change (a reclaim, a replay beside live workers) is older
      newer = not last
    end
    if newer then
      if kind == 'S' then
        redis.call('HSET', target, f, channels)
      elseif kind == 'U' then
        redis.call('HDEL', target, f)
        redis.call('HDEL', other, f)
      elseif kind == 'E' then
        local had = redis.call('HGET', target, f) or ''
        redis.call('HSET', target, f, table.concat(merge_channels(channels, had, ops[i + 8]), ','))
      else
        for _, h in ipairs({target, other}) do
          if redis.call('HEXISTS', h, f) == 1 then redis.call('HSET', h, f, channels) end
        end
      end
    end
    i = i + 9
  elseif op == 'FM' then
    local count = ops[i + 4]
    if redis.call('HEXISTS', ops[i + 1], ops[i + 2]) == 1 then
      insert_many(ops[i + 3], i + 5, i + 4 + count)
    end
    i = i + 5 + count
  elseif op == 'FX' then
    local f, authored, home, count = ops[i + 3], ops[i + 4], ops[i + 5], ops[i + 6]
    if redis.call('HEXISTS', ops[i + 1], f) == 0 and redis.call('HEXISTS', ops[i + 2], f) == 0 then
      for j = i + 7, i + 6 + count do  -- their own posts (as the account) stay
        if not redis.call('ZSCORE', authored, ops[j]) then redis.call('ZREM', home, ops[j]) end
      end
    end
    i = i + 7 + count
  elseif op == 'F' then
    local cursor = fanout_page(ops[i + 2], '0', page_size, ops[i + 3], ops[i + 4], cap)
    if cursor ~= '0' then
      more[#more + 1] = ops[i + 1]
      more[#more + 1] = cursor
    end
    i = i + 5
  else
    return redis.error_reply('unknown write ' .. tostring(op))
  end
end
return more
