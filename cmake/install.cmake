# install.cmake - what `cmake --install` puts where (included at the end of the top-level
# CMakeLists.txt). Paths are relative to CMAKE_INSTALL_PREFIX so a staged install
# (`cmake --install build --prefix /tmp/x`) stays inside its prefix; the pkg-config file and the
# CMake package config locate the prefix from their own position, so both are relocatable.
#
#   sbin/kvd, bin/kvctl                      (kvd/, tools/kvctl/)
#   lib/libkvclient.so.0 -> .so.0.1.0, .so   shared, SONAME libkvclient.so.0, only kvc_* exported
#   lib/libkvclient.a                        static, self-contained (ipc + kernels folded in with
#                                            `ld -r`; only kvc_* stay global)
#   include/kvclient.h
#   lib/pkgconfig/kvclient.pc                pkg-config --cflags --libs [--static] kvclient
#   lib/cmake/kvclient/                      find_package(kvclient): kvclient::kvclient(_static)
#   share/man/man{1,5,8}/                    kvctl(1), kvd.conf(5), kvd(8)
#   lib/systemd/system/kvd.service, lib/sysusers.d/kvd.conf, lib/tmpfiles.d/kvd.conf
#   etc/kvd/kvd.conf, share/doc/kvd/kvd.conf.example
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(NOT TARGET kvclient OR NOT TARGET kvclient_static)
  message(STATUS "install: libkvclient targets missing; nothing to install yet")
  return()
endif()

set(_kvi_libdir ${CMAKE_INSTALL_LIBDIR})
set(_kvi_stage ${CMAKE_BINARY_DIR}/install-stage)

# ---- libkvclient, shared --------------------------------------------------------------------
# The build tree's include directory is for in-tree users only; the exported target carries the
# installed one (INCLUDES DESTINATION below).
set_target_properties(kvclient PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
                      "$<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/libkvclient/include>")
install(TARGETS kvclient EXPORT kvclientTargets
        LIBRARY DESTINATION ${_kvi_libdir} NAMELINK_COMPONENT Development
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_SOURCE_DIR}/libkvclient/include/kvclient.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# ---- libkvclient, static and self-contained ---------------------------------------------------
# libkvclient.a in the build tree needs kvipc and kvkernels beside it. The installed one folds them
# in: one relocatable object (ld -r) whose non-kvc_* symbols are made local (objcopy), so a program
# linking it sees the public API only, as with the shared library.
find_program(KVI_OBJCOPY NAMES objcopy REQUIRED)
set(_kvi_static ${_kvi_stage}/libkvclient.a)
add_custom_command(
  OUTPUT ${_kvi_static}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_kvi_stage}
  COMMAND ${CMAKE_LINKER} -r -o ${_kvi_stage}/kvclient_all.o --whole-archive
          $<TARGET_FILE:kvclient_static> $<TARGET_FILE:kvipc> $<TARGET_FILE:kvkernels>
  COMMAND ${KVI_OBJCOPY} -w --keep-global-symbol=kvc_* ${_kvi_stage}/kvclient_all.o
  COMMAND ${CMAKE_COMMAND} -E rm -f ${_kvi_static}
  COMMAND ${CMAKE_AR} rcs ${_kvi_static} ${_kvi_stage}/kvclient_all.o
  DEPENDS kvclient_static kvipc kvkernels
  COMMENT "Folding kvipc and kvkernels into the installed libkvclient.a"
  VERBATIM)
add_custom_target(kvclient_install_static ALL DEPENDS ${_kvi_static})
install(FILES ${_kvi_static} DESTINATION ${_kvi_libdir})

# ---- pkg-config -------------------------------------------------------------------------------
set(_kvi_private "-lzmq -lsodium -lpthread -lm")
# libzmq and libsodium go in Libs.private rather than Requires.private: Debian's libzmq.pc
# names static-only dependencies (libpgm, libnorm's protokit) that are not installed, which would
# break `pkg-config --static` for everyone; kvclient needs only the libraries themselves.
if(KVD_HAVE_CUDA)
  set(_kvi_private "${_kvi_private} -L${CUDAToolkit_LIBRARY_DIR} -lcudart")
endif()
file(RELATIVE_PATH _kvi_pc_up /p/${_kvi_libdir}/pkgconfig /p)
file(CONFIGURE OUTPUT ${_kvi_stage}/kvclient.pc CONTENT [[
prefix=${pcfiledir}/@_kvi_pc_up@
libdir=${prefix}/@_kvi_libdir@
includedir=${prefix}/@CMAKE_INSTALL_INCLUDEDIR@

Name: kvclient
Description: client library of kvd, the shared-memory KV-cache daemon for LLM serving
Version: @PROJECT_VERSION@
Cflags: -I${includedir}
Libs: -L${libdir} -lkvclient
Libs.private: @_kvi_private@
]] @ONLY)
install(FILES ${_kvi_stage}/kvclient.pc DESTINATION ${_kvi_libdir}/pkgconfig)

# ---- CMake package ----------------------------------------------------------------------------
set(_kvi_cmakedir ${_kvi_libdir}/cmake/kvclient)
file(RELATIVE_PATH _kvi_cm_up /p/${_kvi_cmakedir} /p)
install(EXPORT kvclientTargets NAMESPACE kvclient:: DESTINATION ${_kvi_cmakedir})
file(CONFIGURE OUTPUT ${_kvi_stage}/kvclientConfig.cmake CONTENT [[
# kvclient CMake package: find_package(kvclient) gives kvclient::kvclient (shared) and
# kvclient::kvclient_static (self-contained static library; needs libzmq and libsodium).
include("${CMAKE_CURRENT_LIST_DIR}/kvclientTargets.cmake")
get_filename_component(_kvc_prefix "${CMAKE_CURRENT_LIST_DIR}/@_kvi_cm_up@" ABSOLUTE)
if(NOT TARGET kvclient::kvclient_static)
  add_library(kvclient::kvclient_static STATIC IMPORTED)
  set_target_properties(kvclient::kvclient_static PROPERTIES
    IMPORTED_LOCATION "${_kvc_prefix}/@_kvi_libdir@/libkvclient.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_kvc_prefix}/@CMAKE_INSTALL_INCLUDEDIR@"
    INTERFACE_LINK_LIBRARIES "zmq;sodium;pthread;m")
endif()
unset(_kvc_prefix)
]] @ONLY)
write_basic_package_version_file(${_kvi_stage}/kvclientConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${_kvi_stage}/kvclientConfig.cmake ${_kvi_stage}/kvclientConfigVersion.cmake
        DESTINATION ${_kvi_cmakedir})

# ---- man pages --------------------------------------------------------------------------------
foreach(_kvi_man kvctl.1 kvd.conf.5 kvd.8)
  if(EXISTS ${CMAKE_SOURCE_DIR}/docs/man/${_kvi_man})
    string(REGEX REPLACE ".*\\.([0-9])$" "\\1" _kvi_sec ${_kvi_man})
    install(FILES ${CMAKE_SOURCE_DIR}/docs/man/${_kvi_man}
            DESTINATION ${CMAKE_INSTALL_MANDIR}/man${_kvi_sec})
  endif()
endforeach()

# ---- systemd and configuration ------------------------------------------------------------------
set(SBINDIR ${CMAKE_INSTALL_FULL_SBINDIR})
set(SYSCONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR})
configure_file(${CMAKE_SOURCE_DIR}/systemd/kvd.service ${_kvi_stage}/kvd.service @ONLY)
install(FILES ${_kvi_stage}/kvd.service DESTINATION lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/systemd/kvd.sysusers DESTINATION lib/sysusers.d
        RENAME kvd.conf)
install(FILES ${CMAKE_SOURCE_DIR}/systemd/kvd.tmpfiles DESTINATION lib/tmpfiles.d
        RENAME kvd.conf)
install(FILES ${CMAKE_SOURCE_DIR}/systemd/kvd.conf DESTINATION ${CMAKE_INSTALL_DOCDIR}
        RENAME kvd.conf.example)
# never overwrite an operator's edited configuration
install(CODE "
  set(_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SYSCONFDIR}/kvd\")
  if(IS_ABSOLUTE \"${CMAKE_INSTALL_SYSCONFDIR}\")
    set(_dir \"\$ENV{DESTDIR}${CMAKE_INSTALL_SYSCONFDIR}/kvd\")
  endif()
  if(EXISTS \"\${_dir}/kvd.conf\")
    message(STATUS \"Keeping: \${_dir}/kvd.conf\")
  else()
    file(INSTALL \"${CMAKE_SOURCE_DIR}/systemd/kvd.conf\" DESTINATION \"\${_dir}\")
  endif()
")
