-- Limits: sets queue q's flow-control limits (lib.lua), or clears them.
-- ARGV: queue, limits JSON ('' to clear). Cleared limits keep the queue
-- under flow control, with none, while a key of it is held back. Answers
-- 'ok'; every broker's claimer is woken (the change may free jobs).
local q, limits = ARGV[3], ARGV[4]
local now = now_us()
if limits ~= '' then
  make_flowed(q, limits)
elseif flowed(q) then
  local held = false
  local kh = redis.call('HGETALL', qkey(q, 'kh'))
  for i = 2, #kh, 2 do
    if tonumber(kh[i]) > now then held = true end
  end
  if held then redis.call('SET', qkey(q, 'limits'), '{}') else make_plain(q) end
end
redis.call('PUBLISH', WAKE_CHANNEL, 'ready')
return 'ok'
