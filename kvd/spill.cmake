# kvspill: the spill tier (kvd/spill*.c), a static library the daemon links. Included by
# kvd/CMakeLists.txt (and by tests/spill when kvd/ has no CMakeLists.txt yet).
if(TARGET kvspill)
  return()
endif()
set(_spill_dir ${CMAKE_CURRENT_LIST_DIR})
if(NOT TARGET PkgConfig::XXHASH) # payload checksum (Debian libxxhash-dev)
  pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET GLOBAL libxxhash)
endif()
add_library(kvspill STATIC ${_spill_dir}/spill.c ${_spill_dir}/spill_io.c
                           ${_spill_dir}/spill_slot.c)
target_include_directories(kvspill PUBLIC ${_spill_dir})
target_link_libraries(kvspill PUBLIC kvkernels PkgConfig::URING PkgConfig::SODIUM
                      PkgConfig::XXHASH)
# FP8 demotion of wider pages needs the kernels' converter; without it those pages are dropped.
get_target_property(_spill_ksrc kvkernels SOURCES)
if(_spill_ksrc MATCHES "kv_quant")
  target_compile_definitions(kvspill PRIVATE KVSPILL_HAVE_QUANT=1)
else()
  message(STATUS "kvspill: kvkernels has no kv_convert_page yet; wide pages will not spill")
endif()
if(KVD_HAVE_CUDA)
  target_sources(kvspill PRIVATE ${_spill_dir}/spill_cuda.c)
  target_link_libraries(kvspill PUBLIC CUDA::cudart)
endif()
