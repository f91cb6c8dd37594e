# kvbench-quant: quantize/dequantize GB/s per format, 1 and 2 threads, beside memcpy.
add_executable(kvbench-quant ${CMAKE_CURRENT_LIST_DIR}/bench_quant.c)
target_link_libraries(kvbench-quant PRIVATE kvkernels Threads::Threads)
