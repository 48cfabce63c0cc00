-- Unfinished, one step over the queues (SSCAN): the jobs scheduled,
-- ready or leased in each. ARGV: cursor ('0' first). Answers {next cursor
-- ('0' at the end), then queue and count pairs}.
local step = redis.call('SSCAN', QUEUES, ARGV[3], 'COUNT', 500)
local out = {step[1]}
for _, q in ipairs(step[2]) do
  out[#out + 1] = q
  out[#out + 1] = unfinished(q)
end
return out
