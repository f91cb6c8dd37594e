# GPU quantize/dequantize against the CPU reference; skips without a device.
if(CRITERION_FOUND)
  add_executable(test_gpu_quant ${CMAKE_CURRENT_LIST_DIR}/test_gpu_quant.c)
  target_link_libraries(test_gpu_quant PRIVATE kvkernels_cuda PkgConfig::CRITERION)
  add_test(NAME gpu_quant COMMAND test_gpu_quant -j1)
  set_tests_properties(gpu_quant PROPERTIES LABELS gpu)
endif()
