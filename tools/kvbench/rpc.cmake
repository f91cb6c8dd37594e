# kvbench-rpc: the request path. lookup+pin / release round trips and pipelined throughput through
# libkvclient against a live kvd, beside a raw ZeroMQ DEALER/ROUTER echo of the same frame sizes
# over the same transport, in the same run (bench_rpc.c).
add_executable(kvbench-rpc ${CMAKE_CURRENT_LIST_DIR}/bench_rpc.c)
target_link_libraries(kvbench-rpc PRIVATE kvclient kvipc PkgConfig::ZMQ)
if(TARGET kvd)
  target_compile_definitions(kvbench-rpc PRIVATE KVBENCH_KVD="$<TARGET_FILE:kvd>")
endif()
