-- Ack: each (job id, lease id) pair of ARGV, fenced by the lease. Answers
-- per pair {'ok', queue, type, attempt, worker, broker, stream},
-- {'unknown'} or {'stale', state}.
local now = now_us()
local out, touched = {}, {}
for i = 3, #ARGV, 2 do
  local q, j, refused = leased(ARGV[i], ARGV[i + 1])
  if refused then
    out[#out + 1] = refused
  else
    end_lease(q, j)
    finish(q, j, 'succeeded', now, nil)
    touched[q] = true
    out[#out + 1] = {'ok', q, j.t, j.a, j.w or '', j.b or '', j.st or ''}
  end
end
for q in pairs(touched) do redue(q) end
return out
