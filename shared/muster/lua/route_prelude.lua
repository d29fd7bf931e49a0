local CHANNELS = {'email', 'sms', 'webhook'}
local added = 0
