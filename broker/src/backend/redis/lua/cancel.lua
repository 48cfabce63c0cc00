-- CancelJob. ARGV: job id. A leased job is marked (its worker learns it on
-- Extend, through any broker); a scheduled or ready one is CANCELLED.
-- Answers {'leased' or 'cancelled', queue, type, attempt}, {'unknown'} or
-- {'wrong', state}.
local q, j = find(ARGV[3])
if not q then return {'unknown'} end
if j.s == 'leased' then
  redis.call('HSET', job_key(q, j.id), 'c', '1')
  return {'leased', q, j.t, j.a}
end
if j.s ~= 'scheduled' and j.s ~= 'ready' then return {'wrong', j.s} end
unlist(q, j)
finish(q, j, 'cancelled', now_us(), nil)
return {'cancelled', q, j.t, j.a}
