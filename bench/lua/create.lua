-- POST a task with a title no other request of this run uses (BENCH_RUN, thread, counter).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local run = os.getenv("BENCH_RUN")
local n = 0
common.authorize()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

setup = common.setup

function request()
  n = n + 1
  local body = string.format(
    '{"title":"Bench task %s-%d-%d","priority":"high","labels":["bench"]}', run, thread_number or 1, n)
  return wrk.format(nil, nil, nil, body)
end

done = common.done
