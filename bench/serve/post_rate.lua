-- wrk script for bench/serve's fixed-rate run: post.lua, paced so that all threads together offer
-- about RATE requests per second.
--   wrk -t T ... -s post_rate.lua URL -- BODY.json RATE T
-- Debian's wrk (4.1) has no -R (wrk2's open-loop mode); this approximates it with the delay()
-- hook. Each thread keeps a schedule of send slots RATE/T per second apart and delays each
-- request until the next free slot (wrk's delays are whole milliseconds, so a request goes out up
-- to half a millisecond before or after its slot; the schedule itself does not drift). The approximation: a
-- request can only go out on a connection that is free, so when the server falls behind the
-- offered rate drops instead of a queue building up, and wrk times each request from when it is
-- sent, not from its slot. The latencies are therefore those of a server offered up to RATE, not
-- a true open-loop measurement; the achieved Requests/sec tells how close the run came to RATE.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } post_rate_timespec;
  int clock_gettime(int clock, post_rate_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("post_rate_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function init(args)
  local f = assert(io.open(args[1], "rb"), "post_rate.lua: cannot open the body file " .. tostring(args[1]))
  local body = f:read("*a")
  f:close()
  req = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  interval_ms = 1000 * tonumber(args[3]) / tonumber(args[2]) -- between this thread's sends
  next_slot = nil
end

function delay()
  local now = now_ms()
  local slot = math.max(next_slot or now, now) -- behind schedule: no burst to catch up
  next_slot = slot + interval_ms
  return math.floor(slot - now + 0.5)
end

function request()
  return req
end
