-- GET one task, the next id of the data file's sample each time: BENCH_PATH is ".../tasks/".
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local ids = common.data().task_ids
local prefix = os.getenv("BENCH_PATH")
local i = 0
common.authorize()

function request()
  i = i % #ids + 1
  return wrk.format("GET", prefix .. ids[i])
end

done = common.done
