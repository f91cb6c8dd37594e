# fuzz_admin: kvd's ADMIN op (kvd/admin.c) on the bytes a client sends, against a real pool.
# kvdcore is instrumented for coverage so the fuzzer sees admin.c and pool.c branches.
if(TARGET kvdcore)
  target_compile_options(kvdcore PRIVATE -fsanitize=fuzzer-no-link)
  kvd_add_fuzz(fuzz_admin ${CMAKE_SOURCE_DIR}/tests/ops/fuzz_admin.c)
  target_link_libraries(fuzz_admin PRIVATE kvdcore)
endif()
