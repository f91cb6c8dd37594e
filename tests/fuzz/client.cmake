# fuzz_client_reply: libkvclient's handling of reply frames (a broken or hostile daemon). The
# library's sources are compiled into the target so that they are instrumented; the codec comes
# from kvipc_fuzz (ipc.cmake). Seeds: tests/fuzz/seeds/fuzz_client_reply/ (one reply per op).
set(_kvc ${CMAKE_SOURCE_DIR}/libkvclient)
kvd_add_fuzz(fuzz_client_reply ${CMAKE_SOURCE_DIR}/tests/client/fuzz_client_reply.c
             ${_kvc}/kvc_req.c ${_kvc}/kvc_core.c ${_kvc}/kvc_hash.c ${_kvc}/kvc_err.c)
target_compile_definitions(fuzz_client_reply PRIVATE KVC_BUILDING)
target_include_directories(fuzz_client_reply PRIVATE ${_kvc} ${_kvc}/include)
target_link_libraries(fuzz_client_reply PRIVATE kvipc_fuzz kvipc PkgConfig::ZMQ PkgConfig::SODIUM
                      Threads::Threads)
