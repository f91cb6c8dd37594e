# fuzz_kv_page: a page whose layout and bytes come from a peer or a spill file (kernels/ sources
# compiled into the target, so they are instrumented).
kvd_add_fuzz(fuzz_kv_page ${CMAKE_CURRENT_LIST_DIR}/fuzz_kv_page.c
             ${CMAKE_SOURCE_DIR}/kernels/kv_format.c ${CMAKE_SOURCE_DIR}/kernels/kv_quant.c
             ${CMAKE_SOURCE_DIR}/kernels/kv_quant_ref.c ${CMAKE_SOURCE_DIR}/kernels/kv_quant_avx2.c)
target_include_directories(fuzz_kv_page PRIVATE ${CMAKE_SOURCE_DIR}/kernels)
target_compile_options(fuzz_kv_page PRIVATE -ffp-contract=off)
target_link_libraries(fuzz_kv_page PRIVATE m)
