-- GET /orders?storeNumber=N&size=20 with N drawn at random from 1..STORES.
local lib = dofile((os.getenv("BENCH_DIR") or "bench") .. "/wrk/lib.lua")
local stores

function init(args)
  lib.seed()
  stores = tonumber(os.getenv("STORES") or "200")
end

function request()
  return wrk.format("GET", "/orders?storeNumber=" .. math.random(stores) .. "&size=20")
end
