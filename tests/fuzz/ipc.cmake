# ipc/ fuzz targets: every decoder of bytes that come from another process. They link kvipc_fuzz,
# the codec built again with -fsanitize=fuzzer-no-link so libFuzzer gets coverage from the code
# under test (kvipc itself stays uninstrumented for everything else in this build).
add_library(kvipc_fuzz STATIC ${CMAKE_SOURCE_DIR}/ipc/proto.c)
target_include_directories(kvipc_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/ipc)
target_link_libraries(kvipc_fuzz PUBLIC kvkernels)
target_compile_options(kvipc_fuzz PRIVATE -fsanitize=fuzzer-no-link)
foreach(t fuzz_proto_request fuzz_proto_reply fuzz_proto_side)
  kvd_add_fuzz(${t} ${CMAKE_SOURCE_DIR}/tests/ipc/${t}.c)
  target_link_libraries(${t} PRIVATE kvipc_fuzz)
endforeach()
