-- Schedule puts or deletes, each if its schedule is at the revision
-- expected. ARGV: the call's two, then five per schedule: name, expected
-- revision ('' for absent, '*' for any: a delete), revision, next tick in
-- ms ('' for none), body (the last three '' for a delete). Answers 1 per
-- schedule if done, 0 if not.
local out = {}
for i = 3, #ARGV, 5 do
  local name, expect = ARGV[i], ARGV[i + 1]
  if expect ~= '*' and not schedule_at(name, expect) then
    out[#out + 1] = 0
  elseif expect ~= '*' then
    schedule_write(name, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    out[#out + 1] = 1
  else
    redis.call('ZREM', SCHEDULES_DUE, name)
    redis.call('SREM', SCHEDULES, name)
    out[#out + 1] = redis.call('DEL', schedule_key(name))
  end
end
return out
