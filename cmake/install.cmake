# cmake --install: the library (static and/or shared), its headers, a relocatable CMake package
# (find_package(vkrnn): vkrnn::vkrnn) and vkrnn.pc, the tools, and the samples' models.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(vkrnn_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/vkrnn)
install(DIRECTORY include/vkrnn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development)

# One export file per kind, so a static and a shared install into one prefix add up.
foreach(kind static shared)
  if(kind STREQUAL "static")
    set(lib vkrnn)
  else()
    set(lib vkrnn_shared)
  endif()
  string(TOUPPER ${kind} KIND)
  if(VKRNN_BUILD_${KIND})
    install(TARGETS ${lib} EXPORT vkrnn-${kind}-targets
      RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
      LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
    install(EXPORT vkrnn-${kind}-targets NAMESPACE vkrnn:: DESTINATION ${vkrnn_cmake_dir}
            COMPONENT development)
  endif()
endforeach()

configure_package_config_file(cmake/vkrnnConfig.cmake.in ${PROJECT_BINARY_DIR}/vkrnnConfig.cmake
  INSTALL_DESTINATION ${vkrnn_cmake_dir})
# 0.x: a minor release may break the API (docs/integration.md).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(vkrnn_compatibility SameMinorVersion)
else()
  set(vkrnn_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${PROJECT_BINARY_DIR}/vkrnnConfigVersion.cmake
  COMPATIBILITY ${vkrnn_compatibility})
install(FILES ${PROJECT_BINARY_DIR}/vkrnnConfig.cmake ${PROJECT_BINARY_DIR}/vkrnnConfigVersion.cmake
  DESTINATION ${vkrnn_cmake_dir} COMPONENT development)

# vkrnn.pc, relocatable: the prefix is found from the .pc file's own place (unless the install
# directories were given as absolute paths).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}"
   OR IS_ABSOLUTE "${CMAKE_INSTALL_DATADIR}")
  set(vkrnn_pc_prefix ${CMAKE_INSTALL_PREFIX})
  set(vkrnn_pc_libdir ${CMAKE_INSTALL_FULL_LIBDIR})
  set(vkrnn_pc_includedir ${CMAKE_INSTALL_FULL_INCLUDEDIR})
  set(vkrnn_pc_datadir ${CMAKE_INSTALL_FULL_DATADIR})
else()
  file(RELATIVE_PATH vkrnn_pc_prefix /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
  string(REGEX REPLACE "/$" "" vkrnn_pc_prefix "\${pcfiledir}/${vkrnn_pc_prefix}")
  set(vkrnn_pc_libdir "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(vkrnn_pc_includedir "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
  set(vkrnn_pc_datadir "\${prefix}/${CMAKE_INSTALL_DATADIR}")
endif()
# A static link needs the C++ runtime (C programs), libdl and threads.
set(vkrnn_pc_libs_private "")
foreach(l IN LISTS CMAKE_CXX_IMPLICIT_LINK_LIBRARIES)
  if(NOT l MATCHES "^(c|gcc|gcc_s|gcc_eh)$")
    string(APPEND vkrnn_pc_libs_private " -l${l}")
  endif()
endforeach()
foreach(l IN LISTS CMAKE_DL_LIBS)
  string(APPEND vkrnn_pc_libs_private " -l${l}")
endforeach()
string(APPEND vkrnn_pc_libs_private " ${CMAKE_THREAD_LIBS_INIT}")
string(STRIP "${vkrnn_pc_libs_private}" vkrnn_pc_libs_private)
# The public headers include <vulkan/vulkan.h>: its directory, where it is not a system one.
set(vkrnn_pc_cflags "")
get_target_property(vkrnn_vulkan_include Vulkan::Headers INTERFACE_INCLUDE_DIRECTORIES)
foreach(dir IN LISTS vkrnn_vulkan_include)
  if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES AND NOT dir STREQUAL "/usr/include")
    string(APPEND vkrnn_pc_cflags " -I${dir}")
  endif()
endforeach()
configure_file(cmake/vkrnn.pc.in ${PROJECT_BINARY_DIR}/vkrnn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/vkrnn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT development)

# Tools, and the samples' models for trying the library out (share/vkrnn/models/<name>).
# The installed tools find the installed shared library relative to themselves.
file(RELATIVE_PATH vkrnn_bin_to_lib ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
foreach(tool vkrnn-info vkrnn-bench)
  if(TARGET ${tool})
    if(APPLE)
      set_target_properties(${tool} PROPERTIES INSTALL_RPATH @loader_path/${vkrnn_bin_to_lib})
    elseif(UNIX)
      set_target_properties(${tool} PROPERTIES INSTALL_RPATH $ORIGIN/${vkrnn_bin_to_lib})
    endif()
    install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools)
  endif()
endforeach()
foreach(model dates sentiment)
  if(EXISTS ${PROJECT_SOURCE_DIR}/samples/${model}/model/model.json)
    install(DIRECTORY samples/${model}/model/
            DESTINATION ${CMAKE_INSTALL_DATADIR}/vkrnn/models/${model} COMPONENT models)
  endif()
endforeach()
