-- Moves dead letters back onto the stream, each exactly once.
--
-- KEYS[1]: the stream; KEYS[2]: the dead-letter stream (both in one hash
-- slot on a Redis Cluster). ARGV: dead-letter IDs.
--
-- For each ID, the dead letter is read here, inside the script, so what is
-- added is what is deleted. The new entry carries the producer's fields
-- unchanged, then `replay.original_id` (the ID the producer's entry first
-- had, kept across repeated replays), `replay.group` (the group that gave
-- up on it: only that group processes it) and `replay.dead_letter_id`.
-- `XADD` comes before `XDEL`, so an error stops the script with the dead
-- letter still in place. A dead letter already gone (another replay took
-- it) is skipped.
--
-- A dead letter goes back only onto the stream it came from (`dlq.stream`;
-- a letter without one, from before it was recorded, counts as this
-- stream's), and only if a group of the stream would process it: the group
-- it names (`dlq.group`) must exist, or, for a letter naming none, any
-- group. Otherwise it stays in the dead-letter stream, untouched.
--
-- Returns, per ID, a pair: {'moved', new ID}, {'gone', ''}, {'stream',
-- the letter's stream} or {'group', the letter's group}. Field names match
-- src/dead_letter.rs and src/replay.rs.
local groups, any_group = {}, false
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    for j = 1, #info, 2 do
      if info[j] == 'name' then
        groups[info[j + 1]] = true
        any_group = true
      end
    end
  end
end
local moved = {}
for i, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[2], id, id)
  moved[i] = { 'gone', '' }
  if #found == 1 then
    local fields = found[1][2]
    local kept = {}
    local first_id, letter_original_id, group, stream
    for j = 1, #fields, 2 do
      local name, value = fields[j], fields[j + 1]
      if name == 'replay.original_id' then
        first_id = value
      elseif name == 'dlq.original_id' then
        letter_original_id = value
      elseif name == 'dlq.stream' then
        stream = value
      elseif name == 'dlq.group' then
        group = value
      elseif string.sub(name, 1, 4) ~= 'dlq.' and string.sub(name, 1, 7) ~= 'replay.' then
        kept[#kept + 1] = name
        kept[#kept + 1] = value
      end
    end
    if stream and stream ~= KEYS[1] then
      moved[i] = { 'stream', stream }
    elseif (group and not groups[group]) or (not group and not any_group) then
      moved[i] = { 'group', group or '' }
    else
      kept[#kept + 1] = 'replay.original_id'
      kept[#kept + 1] = first_id or letter_original_id or id
      if group then
        kept[#kept + 1] = 'replay.group'
        kept[#kept + 1] = group
      end
      kept[#kept + 1] = 'replay.dead_letter_id'
      kept[#kept + 1] = id
      moved[i] = { 'moved', redis.call('XADD', KEYS[1], '*', unpack(kept)) }
      redis.call('XDEL', KEYS[2], id)
    end
  end
end
return moved
