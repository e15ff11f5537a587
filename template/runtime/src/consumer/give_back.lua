-- At a graceful stop, gives back the entries a blocking read delivered to
-- this consumer after the worker stopped reading: they were never started,
-- so their delivery must not count. Their delivery count is set back to 0
-- (`XCLAIM ... RETRYCOUNT 0 JUSTID`), so that the next start's replay or
-- another consumer's takeover delivers them as for the first time, and a
-- `max_deliveries` of 1 does not dead-letter them unprocessed.
--
-- KEYS[1]: the stream. ARGV[1]: the group; ARGV[2]: this consumer;
-- ARGV[3]: the last entry the worker received from a read of new entries
-- (exclusive; `0-0` if none): every entry it started has this ID or a
-- smaller one, or was delivered more than once; ARGV[4]: the time since
-- the read was abandoned, in milliseconds: what it delivered has been
-- idle no longer than that.
--
-- Returns how many entries were given back.
local stream, group, consumer, after = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local max_idle = tonumber(ARGV[4])
local given = 0
local start = '(' .. after
while true do
  local page = redis.call('XPENDING', stream, group, start, '+', 100, consumer)
  local ids = {}
  for _, pending in ipairs(page) do
    if pending[4] == 1 and pending[3] <= max_idle then
      ids[#ids + 1] = pending[1]
    end
  end
  if #ids > 0 then
    redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids), 'RETRYCOUNT', 0, 'JUSTID')
    given = given + #ids
  end
  if #page < 100 then
    return given
  end
  start = '(' .. page[#page][1]
end
