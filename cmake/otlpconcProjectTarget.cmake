# otlpconc_project_target(<target> [THIRD_PARTY])
#
# Applies the project's own build policy to one of its targets (tests, stress tests, benchmarks,
# examples): strict warnings, -Werror when OTLPCONC_WARNINGS_AS_ERRORS is on, and the sanitizer
# chosen by OTLPCONC_SANITIZER. None of this is ever put on the otlpconc INTERFACE target, so
# consumers never inherit it. THIRD_PARTY (code we compile but do not own, such as Catch2's main)
# gets the sanitizer but not our warning policy.
function(otlpconc_project_target target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "THIRD_PARTY" "" "")
  target_link_libraries(${target} PRIVATE otlpconc::otlpconc)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT arg_THIRD_PARTY)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
    if(OTLPCONC_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
  if(OTLPCONC_SANITIZER STREQUAL "address")
    set(san -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  elseif(OTLPCONC_SANITIZER STREQUAL "thread")
    set(san -fsanitize=thread -fno-omit-frame-pointer)
  elseif(NOT OTLPCONC_SANITIZER STREQUAL "")
    message(FATAL_ERROR "OTLPCONC_SANITIZER must be '', 'address' or 'thread', not '${OTLPCONC_SANITIZER}'")
  endif()
  if(san)
    target_compile_options(${target} PRIVATE ${san})
    target_link_options(${target} PRIVATE ${san})
  endif()
endfunction()
