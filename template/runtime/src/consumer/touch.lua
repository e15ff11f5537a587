-- The heartbeat: resets the idle time of the entries this consumer still
-- holds, and names those it no longer holds.
--
-- KEYS[1]: the stream. ARGV[1]: the group; ARGV[2]: this consumer;
-- ARGV[3] and on: entry IDs (a bounded number: they are unpacked onto the
-- Lua stack).
--
-- Each ID is looked up in the group's pending list (`XPENDING` of that one
-- ID); those still pending for this consumer are claimed by it again with
-- `XCLAIM <consumer> 0 ... JUSTID`, which counts no delivery. Lookup and
-- claim are one atomic script, so a takeover cannot slip in between: an
-- entry another consumer took over while this one did not answer (longer
-- than `claim_idle`) stays that consumer's.
--
-- Returns a pair {ID, holder} for each ID no longer this consumer's: the
-- holder is the consumer that has it now, or '' where none has (it was
-- acknowledged, or the group was recreated).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local claim = { 'XCLAIM', stream, group, consumer, '0' }
local first_id = #claim + 1
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
  local holder = pending and pending[2] or ''
  if holder == consumer then
    claim[#claim + 1] = id
  else
    lost[#lost + 1] = { id, holder }
  end
end
if #claim >= first_id then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return lost
