// Defaults of the variant axes (shaders/variants.cmake): each variant of a shader is the
// shader built with one or more of these flipped, named <name>[_shuffle][_f16][_nosubgroup]
// [_inplace] (cmake/shaders.cmake; src/ops/kernel_interface.hpp names them the same way).
#ifndef VKRNN_VARIANTS_GLSL
#define VKRNN_VARIANTS_GLSL

#ifndef USE_SHUFFLE
#define USE_SHUFFLE 0   // 1: subgroup shuffles share loads (_shuffle)
#endif
#ifndef FP16_STORAGE
#define FP16_STORAGE 0  // 1: big tensors stored as float16, fp32 arithmetic (_f16)
#endif
#ifndef USE_SUBGROUP
#define USE_SUBGROUP 1  // 0: no subgroup arithmetic (_nosubgroup)
#endif
#ifndef IN_PLACE
#define IN_PLACE 0      // 1: the output overwrites the first input (_inplace)
#endif

#endif  // VKRNN_VARIANTS_GLSL
