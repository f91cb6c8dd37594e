# CUDA paged attention against the CPU fp64 reference (bounds of tests/attn); skips without a device.
if(CRITERION_FOUND AND TARGET attn_th)
  add_executable(test_gpu_attn ${CMAKE_CURRENT_LIST_DIR}/test_gpu_attn.c)
  target_include_directories(test_gpu_attn PRIVATE ${CMAKE_SOURCE_DIR}/tests/attn)
  target_link_libraries(test_gpu_attn PRIVATE attn_th kvkernels_cuda PkgConfig::CRITERION)
  add_test(NAME gpu_attn COMMAND test_gpu_attn -j1)
  set_tests_properties(gpu_attn PROPERTIES LABELS gpu TIMEOUT 300)
endif()
