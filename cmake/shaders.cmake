# Compiles GLSL compute shaders to SPIR-V (Vulkan 1.1 target), validates them with spirv-val and
# embeds them in a static library, so nothing is read from disk at run time.
# A depfile from glslangValidator tracks #include'd helpers: editing one rebuilds only its users.

set(VKRNN_SPIRV_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_spirv.cmake)

# vkrnn_add_shader(NAME <kernel name> SOURCE <file.comp> [DEFINES A=1 B ...])
# Appends the generated .cpp to the parent-scope list VKRNN_SHADER_CPP and the name to
# VKRNN_SHADER_NAMES.
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
endfunction()
