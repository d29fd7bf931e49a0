-- KEYS: followers hash (one partition)   ARGV: cursor, batch, home member, home prefix, cap
-- → next cursor ("0" when done).
--! include fanout_page

return fanout_page(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
