-- Delivers one entry again to the consumer that holds it, and only then:
-- the replay of own pending entries and the takeover of entries delivered
-- more than once work through their lists one entry at a time, and an
-- entry still waiting its turn may have been taken over meanwhile by
-- another live consumer (legitimately, once idle for `claim_idle`). That
-- one is left to it, never claimed back.
--
-- KEYS[1]: the stream. ARGV[1]: the group; ARGV[2]: this consumer;
-- ARGV[3]: the entry ID.
--
-- Returns { deliveries, entries }: the delivery count after this delivery
-- and `XCLAIM`'s reply (empty where the entry was deleted from the stream:
-- Redis then drops it from the pending list); or { -1 } where the entry is
-- no longer this consumer's (another one holds it, or it was acknowledged).
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
if not pending or pending[2] ~= consumer then
  return { -1 }
end
local entries = redis.call('XCLAIM', stream, group, consumer, 0, id)
return { pending[4] + 1, entries }
