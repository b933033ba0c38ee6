# cmake -P script: builds and runs one consumer project of the installed or the in-tree library.
#   MODE=install       install PROJECT_BUILD_DIR into a fresh prefix, build CONSUMER_DIR against it with
#                      find_package, then compile the same source with only pkg-config's flags.
#                      With WITH_HWLOC=OFF instead of PROJECT_BUILD_DIR: configure OTLPCONC_SOURCE_DIR
#                      afresh with OTLPCONC_WITH_HWLOC=OFF and install that.
#   MODE=subdirectory  build CONSUMER_DIR, which add_subdirectory()s OTLPCONC_SOURCE_DIR.
# EXPECT_HWLOC (0/1): the consumer checks that otlpconc::topology::hwloc_enabled matches, and the
# installed package files must mention hwloc exactly when it is 1.
# EXPECT_CURL (0/1): the package has the otlpconc::otlp_http target and otlpconc-otlp-http.pc exactly
# when it is 1; then consumer_http is built (CMake and pkg-config) and run too. WITH_HWLOC=OFF also
# configures OTLPCONC_WITH_CURL=OFF.
cmake_minimum_required(VERSION 3.25)

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# Each codec the installed package announces (in otlpconc-otlp-http.pc) reached consumer_http, whose
# output is last_output, and worked.
macro(check_codecs_used)
  file(READ ${prefix}/share/pkgconfig/otlpconc-otlp-http.pc http_pc)
  foreach(codec "zlib;1" "libzstd;2")
    list(GET codec 0 module)
    list(GET codec 1 number)
    string(REGEX MATCH "\nRequires:[^\n]*${module}" announced "${http_pc}")
    string(FIND "${last_output}" "(compression ${number})" used)
    if(announced AND used EQUAL -1)
      message(FATAL_ERROR "the package has ${module} but consumer_http did not use it:\n${last_output}")
    endif()
  endforeach()
endmacro()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(build ${WORK_DIR}/build)
set(configure_args -S ${CONSUMER_DIR} -B ${build} -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX}
                   -DCMAKE_BUILD_TYPE=Release -DEXPECT_HWLOC=${EXPECT_HWLOC} -DEXPECT_CURL=${EXPECT_CURL})

if(MODE STREQUAL "install")
  set(prefix ${WORK_DIR}/prefix)
  if(WITH_HWLOC STREQUAL "OFF")
    set(PROJECT_BUILD_DIR ${WORK_DIR}/project)
    run(${CMAKE_COMMAND} -S ${OTLPCONC_SOURCE_DIR} -B ${PROJECT_BUILD_DIR} -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX}
        -DOTLPCONC_WITH_HWLOC=OFF -DOTLPCONC_WITH_CURL=OFF -DOTLPCONC_BUILD_TESTS=OFF -DOTLPCONC_BUILD_STRESS=OFF -DOTLPCONC_BUILD_BENCH=OFF
        -DOTLPCONC_BUILD_EXAMPLES=OFF -DOTLPCONC_BUILD_TOOLS=OFF)
  endif()
  run(${CMAKE_COMMAND} --install ${PROJECT_BUILD_DIR} --prefix ${prefix})
  foreach(f include/otlpconc/counter.hpp share/cmake/otlpconc/otlpconcConfig.cmake
            share/cmake/otlpconc/otlpconcConfigVersion.cmake share/pkgconfig/otlpconc.pc)
    if(NOT EXISTS ${prefix}/${f})
      message(FATAL_ERROR "install is missing ${f}")
    endif()
  endforeach()
  # The package carries hwloc exactly when the build used it.
  foreach(f share/cmake/otlpconc/otlpconcConfig.cmake share/cmake/otlpconc/otlpconcTargets.cmake
            share/pkgconfig/otlpconc.pc)
    file(READ ${prefix}/${f} text)
    string(FIND "${text}" "HWLOC" upper)
    string(FIND "${text}" "hwloc" lower)
    if(EXPECT_HWLOC AND upper EQUAL -1 AND lower EQUAL -1)
      message(FATAL_ERROR "${f} does not carry the hwloc dependency")
    elseif(NOT EXPECT_HWLOC AND NOT (upper EQUAL -1 AND lower EQUAL -1))
      message(FATAL_ERROR "${f} mentions hwloc although the build has none:\n${text}")
    endif()
  endforeach()
  # ... and libcurl only in the otlp_http component's own files, which exist exactly when the build
  # used it.
  file(READ ${prefix}/share/cmake/otlpconc/otlpconcTargets.cmake text)
  string(FIND "${text}" "CURL" upper)
  if(NOT upper EQUAL -1)
    message(FATAL_ERROR "otlpconcTargets.cmake must not need libcurl (only the otlp_http component does)")
  endif()
  set(http_targets ${prefix}/share/cmake/otlpconc/otlpconcOtlpHttpTargets.cmake)
  if(EXPECT_CURL AND NOT EXISTS ${http_targets})
    message(FATAL_ERROR "install is missing otlpconcOtlpHttpTargets.cmake")
  elseif(NOT EXPECT_CURL AND EXISTS ${http_targets})
    message(FATAL_ERROR "otlpconcOtlpHttpTargets.cmake installed although the build has no libcurl")
  endif()
  if(EXPECT_CURL AND NOT EXISTS ${prefix}/share/pkgconfig/otlpconc-otlp-http.pc)
    message(FATAL_ERROR "install is missing share/pkgconfig/otlpconc-otlp-http.pc")
  elseif(NOT EXPECT_CURL AND EXISTS ${prefix}/share/pkgconfig/otlpconc-otlp-http.pc)
    message(FATAL_ERROR "otlpconc-otlp-http.pc installed although the build has no libcurl")
  endif()
  file(READ ${prefix}/share/pkgconfig/otlpconc.pc text)
  string(FIND "${text}" "curl" lower)
  if(NOT lower EQUAL -1)
    message(FATAL_ERROR "otlpconc.pc must not require libcurl (only otlpconc-otlp-http.pc does):\n${text}")
  endif()
  run(${CMAKE_COMMAND} ${configure_args} -DCMAKE_PREFIX_PATH=${prefix})
  run(${CMAKE_COMMAND} --build ${build})
  run(${build}/consumer)
  if(EXPECT_CURL)
    run(${build}/consumer_http)
    check_codecs_used()
  endif()
  # The core package never needs the exporter's codecs.
  foreach(f share/cmake/otlpconc/otlpconcTargets.cmake share/pkgconfig/otlpconc.pc)
    file(READ ${prefix}/${f} text)
    if(text MATCHES "ZLIB|ZSTD|zlib|zstd")
      message(FATAL_ERROR "${f} must not need zlib or libzstd (only the otlp_http component does)")
    endif()
  endforeach()

  # pkg-config path: the .pc file alone must be enough to compile and link.
  find_program(PKG_CONFIG pkg-config REQUIRED)
  set(ENV{PKG_CONFIG_PATH} ${prefix}/share/pkgconfig)
  run(${PKG_CONFIG} --cflags --libs otlpconc)
  string(STRIP "${last_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CXX} ${flags} -DEXPECT_HWLOC=${EXPECT_HWLOC} ${CONSUMER_DIR}/consumer.cpp -o ${WORK_DIR}/pkgconfig_consumer
      ${flags})
  run(${WORK_DIR}/pkgconfig_consumer)
  if(EXPECT_CURL)
    run(${PKG_CONFIG} --cflags --libs otlpconc-otlp-http)
    string(STRIP "${last_output}" flags)
    separate_arguments(flags UNIX_COMMAND "${flags}")
    run(${CXX} ${flags} ${CONSUMER_DIR}/consumer_http.cpp -o ${WORK_DIR}/pkgconfig_consumer_http ${flags})
    run(${WORK_DIR}/pkgconfig_consumer_http)
    check_codecs_used()
  endif()
elseif(MODE STREQUAL "subdirectory")
  run(${CMAKE_COMMAND} ${configure_args} -DOTLPCONC_SOURCE_DIR=${OTLPCONC_SOURCE_DIR})
  run(${CMAKE_COMMAND} --build ${build})
  run(${build}/consumer)
  if(EXPECT_CURL)
    run(${build}/consumer_http)
  endif()
else()
  message(FATAL_ERROR "MODE must be install or subdirectory")
endif()
message(STATUS "consumer (${MODE}) built and ran")
