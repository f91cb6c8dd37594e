# fuzz_spill_slot: the spill slot decoder (bytes read back from a store file at restart). Built
# from the decoder's own sources (slot codec + page geometry), not the whole kvspill library.
if(NOT TARGET PkgConfig::XXHASH)
  pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET GLOBAL libxxhash)
endif()
kvd_add_fuzz(fuzz_spill_slot ${CMAKE_SOURCE_DIR}/tests/spill/fuzz_spill_slot.c
             ${CMAKE_SOURCE_DIR}/kvd/spill_slot.c ${CMAKE_SOURCE_DIR}/kernels/kv_format.c)
target_include_directories(fuzz_spill_slot PRIVATE ${CMAKE_SOURCE_DIR}/kvd
                           ${CMAKE_SOURCE_DIR}/kernels)
target_link_libraries(fuzz_spill_slot PRIVATE PkgConfig::SODIUM PkgConfig::XXHASH)
