-- Ack: each (job id, lease id, result) triple of ARGV, fenced by the
-- lease; the result ('' for none) stays with the finished job. Answers
-- per triple {'ok', queue, type, attempt, worker, broker, stream},
-- {'unknown'} or {'stale', state}.
DEFER = true
local now = now_us()
local out = {}
-- What an ack reads of a job: the lease check, the lease's end, finish()
-- and the answer (fewer fields than LOADED: each is a lookup).
local NEEDED = {'id', 's', 'li', 'sq', 't', 'a', 'w', 'b', 'st', 'k', 'fk'}
local ids = {}
for i = 3, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local queues = queues_of(ids)
for n, id in ipairs(ids) do
  local q = queues[n]
  local refused
  local j
  if q then
    q, j, refused = leased(id, ARGV[3 * n + 1], NEEDED, q)
  else
    refused = {'unknown'}
  end
  if refused then
    out[#out + 1] = refused
  else
    end_lease(q, j)
    finish(q, j, 'succeeded', now, nil, ARGV[3 * n + 2])
    out[#out + 1] = {'ok', q, j.t, j.a, j.w or '', j.b or '', j.st or ''}
  end
end
flush()
return out
