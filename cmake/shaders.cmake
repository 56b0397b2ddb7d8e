# Compiles GLSL compute shaders to SPIR-V (Vulkan 1.1 target), validates them with spirv-val and
# embeds them in a static library, so nothing is read from disk at run time. Each source is
# also reflected (cmake/spirv_reflect.cpp): reflect/<source>.hpp describes the push block,
# bindings and specialization constants of every variant, and the ops' C++ declarations of
# their kernels are static_asserted against it (src/ops/kernel_interface.hpp).
# A depfile from glslangValidator tracks #include'd helpers: editing one rebuilds only its users.

set(VKRNN_SPIRV_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_spirv.cmake)
set(VKRNN_SPIRV_REFLECT_SOURCE ${CMAKE_CURRENT_LIST_DIR}/spirv_reflect.cpp)

# vkrnn_add_shader(NAME <kernel name> SOURCE <file.comp> [DEFINES A=1 B ...])
# Appends the generated .cpp to the parent-scope list VKRNN_SHADER_CPP, the name to
# VKRNN_SHADER_NAMES and the .spv to VKRNN_SHADER_SPV.
function(vkrnn_add_shader)
  cmake_parse_arguments(ARG "" "NAME;SOURCE" "DEFINES" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/spirv)
  set(spv ${out_dir}/${ARG_NAME}.spv)
  set(cpp ${out_dir}/${ARG_NAME}.spv.cpp)
  set(dep ${out_dir}/${ARG_NAME}.d)
  set(defines "")
  foreach(d IN LISTS ARG_DEFINES)
    list(APPEND defines "-D${d}")
  endforeach()
  add_custom_command(
    OUTPUT ${spv}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${GLSLANG_VALIDATOR} --quiet -V --target-env vulkan1.1 -S comp
            -I${CMAKE_CURRENT_SOURCE_DIR}/include ${defines}
            --depfile ${dep} -o ${spv} ${CMAKE_CURRENT_SOURCE_DIR}/${ARG_SOURCE}
    COMMAND ${SPIRV_VAL} --target-env vulkan1.1 ${spv}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${ARG_SOURCE}
    DEPFILE ${dep}
    COMMENT "GLSL -> SPIR-V ${ARG_NAME}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${cpp}
    COMMAND ${CMAKE_COMMAND} -DIN=${spv} -DOUT=${cpp} -DNAME=${ARG_NAME} -P ${VKRNN_SPIRV_EMBED_SCRIPT}
    DEPENDS ${spv} ${VKRNN_SPIRV_EMBED_SCRIPT}
    COMMENT "embed ${ARG_NAME}.spv"
    VERBATIM)
  set(VKRNN_SHADER_CPP ${VKRNN_SHADER_CPP} ${cpp} PARENT_SCOPE)
  set(VKRNN_SHADER_NAMES ${VKRNN_SHADER_NAMES} ${ARG_NAME} PARENT_SCOPE)
  set(VKRNN_SHADER_SPV ${VKRNN_SHADER_SPV} ${spv} PARENT_SCOPE)
endfunction()

# The variant axes, one naming rule (src/ops/kernel_interface.hpp builds the same names):
#   <base>[_shuffle][_f16][_nosubgroup][_inplace]
# each suffix the build with that axis' define. Listed in name order.
set(VKRNN_AXES shuffle fp16 subgroup in_place)
set(VKRNN_AXIS_shuffle_SUFFIX _shuffle)
set(VKRNN_AXIS_shuffle_DEFINE USE_SHUFFLE=1)
set(VKRNN_AXIS_fp16_SUFFIX _f16)
set(VKRNN_AXIS_fp16_DEFINE FP16_STORAGE=1)
set(VKRNN_AXIS_subgroup_SUFFIX _nosubgroup)
set(VKRNN_AXIS_subgroup_DEFINE USE_SUBGROUP=0)
set(VKRNN_AXIS_in_place_SUFFIX _inplace)
set(VKRNN_AXIS_in_place_DEFINE IN_PLACE=1)

# vkrnn_add_shader_family(SOURCE <name>.comp [AXES <axis>...])
# VKRNN_SPIRV_REFLECT names the reflection tool: its target, or the host build's path when
# cross-compiling (shaders/CMakeLists.txt).
# Compiles every combination of the axes (the plain build included), then writes
# reflect/<name>.hpp from all of them. Appends to the same lists as vkrnn_add_shader and the
# header's stamp to VKRNN_SHADER_REFLECTION.
function(vkrnn_add_shader_family)
  cmake_parse_arguments(ARG "" "SOURCE" "AXES" ${ARGN})
  get_filename_component(family ${ARG_SOURCE} NAME_WE)
  foreach(axis IN LISTS ARG_AXES)
    if(NOT axis IN_LIST VKRNN_AXES)
      message(FATAL_ERROR "${ARG_SOURCE}: unknown variant axis '${axis}' (known: ${VKRNN_AXES})")
    endif()
  endforeach()
  list(LENGTH VKRNN_AXES n_axes)
  math(EXPR combinations "(1 << ${n_axes}) - 1")
  set(pairs "")
  set(spvs "")
  foreach(bits RANGE 0 ${combinations})
    set(name ${family})
    set(defines "")
    set(ok TRUE)
    set(i 0)
    foreach(axis IN LISTS VKRNN_AXES)
      math(EXPR axis_set "(${bits} >> ${i}) & 1")
      if(axis_set)
        if(NOT axis IN_LIST ARG_AXES)
          set(ok FALSE)
        endif()
        string(APPEND name ${VKRNN_AXIS_${axis}_SUFFIX})
        list(APPEND defines ${VKRNN_AXIS_${axis}_DEFINE})
      endif()
      math(EXPR i "${i} + 1")
    endforeach()
    if(ok)
      vkrnn_add_shader(NAME ${name} SOURCE ${ARG_SOURCE} DEFINES ${defines})
      list(APPEND pairs "${name}=${CMAKE_CURRENT_BINARY_DIR}/spirv/${name}.spv")
      list(APPEND spvs ${CMAKE_CURRENT_BINARY_DIR}/spirv/${name}.spv)
    endif()
  endforeach()
  # The header is rewritten only when it changes (the stamp always), so editing a shader's
  # body recompiles no op.
  set(header ${CMAKE_CURRENT_BINARY_DIR}/include/reflect/${family}.hpp)
  set(stamp ${CMAKE_CURRENT_BINARY_DIR}/reflect-stamps/${family}.stamp)
  add_custom_command(
    OUTPUT ${stamp}
    BYPRODUCTS ${header}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/include/reflect
            ${CMAKE_CURRENT_BINARY_DIR}/reflect-stamps
    COMMAND ${VKRNN_SPIRV_REFLECT} ${header} ${family} ${pairs}
    COMMAND ${CMAKE_COMMAND} -E touch ${stamp}
    DEPENDS ${VKRNN_SPIRV_REFLECT} ${spvs}
    COMMENT "reflect ${family}"
    VERBATIM)
  set(VKRNN_SHADER_CPP ${VKRNN_SHADER_CPP} PARENT_SCOPE)
  set(VKRNN_SHADER_NAMES ${VKRNN_SHADER_NAMES} PARENT_SCOPE)
  set(VKRNN_SHADER_SPV ${VKRNN_SHADER_SPV} PARENT_SCOPE)
  set(VKRNN_SHADER_REFLECTION ${VKRNN_SHADER_REFLECTION} ${stamp} PARENT_SCOPE)
endfunction()
