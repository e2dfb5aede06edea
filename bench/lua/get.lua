-- GET of the URL wrk is given (healthz, me, the lists and the search), with the bearer token if any.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
common.authorize()
done = common.done
