# kvbench-attn: decode attention per format and context vs F16 and streaming read (bench_attn.c).
add_executable(kvbench-attn ${CMAKE_CURRENT_LIST_DIR}/bench_attn.c)
target_link_libraries(kvbench-attn PRIVATE kvkernels m)
