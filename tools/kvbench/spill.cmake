# kvbench-spill: spill write / restore read throughput vs fio and a plain O_DIRECT loop.
if(NOT TARGET kvspill)
  include(${CMAKE_SOURCE_DIR}/kvd/spill.cmake)
endif()
add_executable(kvbench-spill ${CMAKE_CURRENT_LIST_DIR}/bench_spill.c)
target_link_libraries(kvbench-spill PRIVATE kvspill)
