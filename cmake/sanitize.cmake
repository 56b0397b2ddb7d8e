# VKRNN_SANITIZE=address,undefined builds every target (library, tests, tools, samples) with
# those sanitizers; any report fails the program (no recovery). Meant for clang (CI uses
# Debian's clang 14: -DCMAKE_CXX_COMPILER=clang++); GCC accepts the same flags. The test
# environment for such a build is VKRNN_SANITIZER_ENV (tests/CMakeLists.txt appends it to
# VKRNN_TEST_ENV): LeakSanitizer suppressions for the uninstrumented Vulkan driver stack in
# tests/sanitizers/lsan.supp, each entry with its reason.
set(VKRNN_SANITIZE "" CACHE STRING "Comma-separated sanitizers to build with: address, undefined (empty: none)")
set(VKRNN_SANITIZER_ENV "")
# Test time limits are multiplied by this (tests/CMakeLists.txt).
set(VKRNN_TIMEOUT_SCALE 1)
if(VKRNN_SANITIZE)
  # The tests' double-precision references run 2-4x slower under ASan + UBSan (test_rnn took
  # more than its 900 s on a loaded 2-core machine).
  set(VKRNN_TIMEOUT_SCALE 4)
  string(REPLACE "," ";" _vkrnn_sanitizers "${VKRNN_SANITIZE}")
  foreach(s IN LISTS _vkrnn_sanitizers)
    if(NOT s MATCHES "^(address|undefined)$")
      message(FATAL_ERROR "VKRNN_SANITIZE: unknown sanitizer '${s}' (known: address, undefined)")
    endif()
  endforeach()
  # Line tables only: reports name file and line at a fraction of -g's build time and size.
  add_compile_options(-fsanitize=${VKRNN_SANITIZE} -fno-sanitize-recover=all -fno-omit-frame-pointer
                      $<IF:$<CXX_COMPILER_ID:Clang>,-gline-tables-only,-g1>)
  add_link_options(-fsanitize=${VKRNN_SANITIZE})
  # Every executable keeps dlopen()ed libraries loaded (tests/sanitizers/keep_loaded.cpp says why).
  # Executables only: the libraries are installed and exported, and must not carry it.
  add_library(vkrnn_keep_loaded OBJECT ${CMAKE_CURRENT_LIST_DIR}/../tests/sanitizers/keep_loaded.cpp)
  link_libraries($<$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>:vkrnn_keep_loaded>)
  set(_vkrnn_supp ${CMAKE_CURRENT_LIST_DIR}/../tests/sanitizers)
  cmake_path(NORMAL_PATH _vkrnn_supp)
  # A small quarantine: lavapipe's compiled compute shaders allocate blocks of a few bytes
  # aligned to 4096 (posix_memalign from the JIT code) for every workgroup; the quarantine
  # counts their requested bytes, not the 8 KiB each really holds, so the default 256 MiB
  # quarantine grows a decode-heavy test to over 10 GiB
  # (measured: vkrnn-dates --eval, 13 GiB and rising; with these settings 0.8 GiB, flat).
  # Use-after-free of recently freed memory is still caught.
  # The Khronos validation layer is off in this build's tests by default: the normal build's
  # suite runs every test with it, and here it would only double the CPU time (measured:
  # test_models_torch 5.2 s -> 2.7 s user) without looking at vkrnn's memory.
  option(VKRNN_SANITIZE_VALIDATION "Keep the validation layer on in a VKRNN_SANITIZE build's tests" OFF)
  if(VKRNN_SANITIZE_VALIDATION)
    set(_vkrnn_validation 1)
  else()
    set(_vkrnn_validation 0)
  endif()
  set(VKRNN_SANITIZER_ENV
    "VKRNN_VALIDATION=${_vkrnn_validation}"
    "ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
    "LSAN_OPTIONS=suppressions=${_vkrnn_supp}/lsan.supp:print_suppressions=0"
    "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=${_vkrnn_supp}/ubsan.supp")
endif()

# VKRNN_FUZZ=ON adds the libFuzzer targets of tests/fuzz (clang only); tests/fuzz/CMakeLists.txt
# instruments the library for coverage (-fsanitize=fuzzer-no-link), which guides the fuzzer
# into vkrnn. Only the library: the hooks on every comparison would slow the tests' CPU
# references tenfold.
option(VKRNN_FUZZ "Build the libFuzzer targets in tests/fuzz (clang; use with VKRNN_SANITIZE)" OFF)
if(VKRNN_FUZZ AND NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "VKRNN_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
endif()
