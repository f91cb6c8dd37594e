# fuzz_attn: paged attention over arena pages of any bytes (kernels/ sources compiled into the
# target so that they are instrumented). Seeds: tests/fuzz/seeds/fuzz_attn/.
kvd_add_fuzz(fuzz_attn ${CMAKE_SOURCE_DIR}/tests/attn/fuzz_attn.c
             ${CMAKE_SOURCE_DIR}/kernels/kv_format.c ${CMAKE_SOURCE_DIR}/kernels/kv_quant.c
             ${CMAKE_SOURCE_DIR}/kernels/kv_quant_ref.c ${CMAKE_SOURCE_DIR}/kernels/kv_quant_avx2.c
             ${CMAKE_SOURCE_DIR}/kernels/attn_cpu.c ${CMAKE_SOURCE_DIR}/kernels/attn_scalar.c
             ${CMAKE_SOURCE_DIR}/kernels/attn_avx2.c ${CMAKE_SOURCE_DIR}/kernels/attn_avx2_win.c
             ${CMAKE_SOURCE_DIR}/kernels/attn_ref.c)
target_include_directories(fuzz_attn PRIVATE ${CMAKE_SOURCE_DIR}/kernels)
target_compile_options(fuzz_attn PRIVATE -ffp-contract=off)
target_link_libraries(fuzz_attn PRIVATE m)
