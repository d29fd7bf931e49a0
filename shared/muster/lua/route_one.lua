-- The per-recipient part shared by the fan-out and DM scripts. Expects in scope: `f` (the
-- recipient), `chosen` (channels csv), `critical` (bool), `K` (first KEYS index of: reach
-- email, sms, webhook, webhooks disabled, status, deliveries email, sms, webhook), `head` and
-- `mid` (request JSON pieces); counts appended requests in `added`.
    for c = 1, 3 do
      local ch = CHANNELS[c]
      if (critical or string.find(chosen, ch, 1, true))
          and redis.call('SISMEMBER', KEYS[K + c - 1], f) == 1
          and (c ~= 3 or redis.call('SISMEMBER', KEYS[K + 3], f) == 0)
          and redis.call('HSETNX', KEYS[K + 4], f .. ':' .. ch, 'pending|0|') == 1 then
        redis.call('XADD', KEYS[K + 4 + c], '*', 'e',
          head .. f .. '.' .. ch .. mid .. f .. '","channel":"' .. ch .. '"}')
        added = added + 1
      end
    end
