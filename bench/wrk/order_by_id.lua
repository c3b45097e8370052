-- GET /orders/{id} with an id drawn at random from IDS_FILE.
local lib = dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk/lib.lua")
local ids

function init(args)
  lib.seed()
  ids = lib.load_ids()
end

function request()
  return wrk.format("GET", "/orders/" .. ids[math.random(#ids)])
end
