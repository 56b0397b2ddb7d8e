// USE_SUBGROUP (default 1) and, when set, the subgroup-arithmetic extensions: shared by every
// include that chooses between a subgroup path and its fallback. USE_SUBGROUP=0 builds the
// variant for devices without subgroup arithmetic (shaders/variants.cmake).
#ifndef VKRNN_SUBGROUP_GLSL
#define VKRNN_SUBGROUP_GLSL

#include "variants.glsl"

#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#endif  // VKRNN_SUBGROUP_GLSL
