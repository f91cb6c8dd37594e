# ipc/ fuzz targets: every decoder of bytes that come from another process. kvipc itself is
# compiled with -fsanitize=fuzzer-no-link under KVD_FUZZ (ipc/CMakeLists.txt) for coverage.
foreach(t fuzz_proto_request fuzz_proto_reply fuzz_proto_side)
  kvd_add_fuzz(${t} ${CMAKE_SOURCE_DIR}/tests/ipc/${t}.c)
  target_link_libraries(${t} PRIVATE kvipc)
endforeach()
