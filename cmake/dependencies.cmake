# The library needs only the headers of its dependencies: libvulkan is loaded at run time, and
# fmt and nlohmann_json are compiled into it. Their CMake packages are used where installed; a
# build given only the headers (e.g. the MinGW cross build, tests/package/mingw.sh) finds them
# on the include path.

# vkrnn_headers_target(<target> <header> [<compile definition>...]): an interface target for a
# header-only dependency whose package was not found.
function(vkrnn_headers_target target header)
  if(TARGET ${target})
    return()
  endif()
  string(MAKE_C_IDENTIFIER "VKRNN_${header}_DIR" var)
  find_path(${var} ${header})
  if(NOT ${var})
    message(FATAL_ERROR "vkrnn: ${header} not found (Debian: scripts/install-deps.sh)")
  endif()
  add_library(${target} INTERFACE IMPORTED)
  set_target_properties(${target} PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES ${${var}} INTERFACE_COMPILE_DEFINITIONS "${ARGN}")
endfunction()

find_package(VulkanHeaders CONFIG QUIET)
if(NOT TARGET Vulkan::Headers)
  find_package(Vulkan QUIET)
endif()
vkrnn_headers_target(Vulkan::Headers vulkan/vulkan.h)
find_package(nlohmann_json 3 CONFIG QUIET)
vkrnn_headers_target(nlohmann_json::nlohmann_json nlohmann/json.hpp)
find_package(fmt CONFIG QUIET)
vkrnn_headers_target(fmt::fmt-header-only fmt/format.h FMT_HEADER_ONLY=1)
if(NOT fmt_VERSION AND VKRNN_fmt_format_h_DIR)  # headers only: their version
  file(STRINGS ${VKRNN_fmt_format_h_DIR}/fmt/core.h fmt_version_define REGEX "^#define FMT_VERSION [0-9]+")
  if(fmt_version_define MATCHES "([0-9]+)$")
    math(EXPR fmt_VERSION "${CMAKE_MATCH_1} / 10000")
  endif()
endif()

# fmt inside vkrnn. Header-only mode would compile fmt's implementation (format-inl.h) in every
# file that formats a message, several seconds each; with fmt 9 the library's files use fmt's
# headers as usual and src/deps/fmt_format.cpp supplies its compiled part once. Other versions
# (whose compiled part differs) use header-only mode. Either way without FMT_SHARED, so nothing
# of fmt is exported from libvkrnn.
add_library(vkrnn_fmt INTERFACE)
target_include_directories(vkrnn_fmt SYSTEM INTERFACE
  $<TARGET_PROPERTY:fmt::fmt-header-only,INTERFACE_INCLUDE_DIRECTORIES>)
set(VKRNN_FMT_SOURCES "")
if(fmt_VERSION VERSION_GREATER_EQUAL 9 AND fmt_VERSION VERSION_LESS 10 AND NOT VKRNN_FMT_HEADER_ONLY)
  set(VKRNN_FMT_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/src/deps/fmt_format.cpp)
else()
  target_compile_definitions(vkrnn_fmt INTERFACE FMT_HEADER_ONLY=1)
endif()
