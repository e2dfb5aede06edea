-- POST a login, the next seeded user each time (the data file holds the JSON bodies).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local bodies = common.data().login_bodies
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

setup = common.setup

function init(args)
  i = ((thread_number or 1) * 997) % #bodies  -- threads start apart
end

function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

done = common.done
