# Spill tier with a GPU arena (pinned staging, device pages); skips without a device.
if(CRITERION_FOUND AND TARGET kvspill)
  add_executable(test_gpu_spill ${CMAKE_SOURCE_DIR}/tests/spill/test_gpu_spill.c)
  target_include_directories(test_gpu_spill PRIVATE ${CMAKE_SOURCE_DIR}/tests/spill)
  target_link_libraries(test_gpu_spill PRIVATE kvspill CUDA::cudart PkgConfig::CRITERION)
  add_test(NAME gpu_spill COMMAND test_gpu_spill -j1)
  set_tests_properties(gpu_spill PROPERTIES LABELS gpu ENVIRONMENT "${KVD_TEST_ENV}")
endif()
