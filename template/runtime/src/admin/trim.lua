-- Checks every consumer group of a stream against a fixed cut and trims
-- there, in one step: nothing can be delivered, added or created between
-- the check and the trim.
--
-- KEYS[1]: the stream. ARGV[1]: the cut, a complete ID (entries with
-- smaller IDs go); ARGV[2]: `=` (exact) or `~` (whole nodes only, never
-- past the cut); ARGV[3]: `trim` (only if no group needs what goes),
-- `force` (trim anyway) or `check` (never trim).
--
-- A group needs an entry before the cut if it is pending there (delivered,
-- not acknowledged) or if the group has not been delivered it yet.
--
-- Returns { removed, groups that need entries before the cut, for each
-- the oldest such entry }; removed is -1 when nothing was trimmed.
local stream, cut, mode, action = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local names, oldest = {}, {}
if redis.call('EXISTS', stream) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local group = {}
    for i = 1, #info, 2 do
      group[info[i]] = info[i + 1]
    end
    local needed
    local pending = redis.call('XPENDING', stream, group['name'], '-', '(' .. cut, 1)
    if #pending > 0 then
      needed = pending[1][1]
    else
      local undelivered = redis.call('XRANGE', stream, '(' .. group['last-delivered-id'], '(' .. cut, 'COUNT', 1)
      if #undelivered > 0 then
        needed = undelivered[1][1]
      end
    end
    if needed then
      names[#names + 1] = group['name']
      oldest[#oldest + 1] = needed
    end
  end
end
local removed = -1
if action == 'force' or (action == 'trim' and #names == 0) then
  removed = redis.call('XTRIM', stream, 'MINID', mode, cut)
end
return { removed, names, oldest }
