-- Ack: each (job id, lease id) pair of ARGV, fenced by the lease. Answers
-- per pair {'ok', queue, type, attempt, worker, broker, stream},
-- {'unknown'} or {'stale', state}.
local now = now_us()
local out = {}
-- What an ack reads of a job: the lease check, the lease's end, finish()
-- and the answer (fewer fields than LOADED: each is a lookup).
local NEEDED = {'id', 's', 'li', 'sq', 't', 'a', 'w', 'b', 'st', 'k'}
for i = 3, #ARGV, 2 do
  local q, j, refused = leased(ARGV[i], ARGV[i + 1], NEEDED)
  if refused then
    out[#out + 1] = refused
  else
    end_lease(q, j)
    finish(q, j, 'succeeded', now, nil)
    out[#out + 1] = {'ok', q, j.t, j.a, j.w or '', j.b or '', j.st or ''}
  end
end
return out
