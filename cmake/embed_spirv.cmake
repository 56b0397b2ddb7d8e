# cmake -DIN=x.spv -DOUT=x.spv.cpp -DNAME=x -P embed_spirv.cmake
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR rem "${n} % 8")
if(NOT rem EQUAL 0)
  message(FATAL_ERROR "${IN}: SPIR-V size is not a multiple of 4 bytes")
endif()
# SPIR-V words are little-endian on every host we build on: reorder bytes into 0xWWWWWWWW.
string(REGEX REPLACE "(..)(..)(..)(..)" "0x\\4\\3\\2\\1u," words "${hex}")
string(REGEX REPLACE "((0x[0-9a-f]+u,){8})" "\\1\n" words "${words}")
string(MAKE_C_IDENTIFIER "${NAME}" id)
file(WRITE ${OUT} "// generated from ${NAME}.spv: do not edit\n#include <cstdint>\n#include <cstddef>\n"
  "namespace vkrnn::shaders {\nextern const std::uint32_t ${id}_spv[] = {\n${words}\n};\n"
  "extern const std::size_t ${id}_spv_words = sizeof(${id}_spv) / sizeof(std::uint32_t);\n}\n")
