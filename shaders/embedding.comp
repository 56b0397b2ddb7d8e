#version 450
#extension GL_GOOGLE_include_directive : require
// Embedding lookup (row gather): out[r, j] = table[clamp(ids[r]), j] for r < rows, j < dim,
// from a strided table (element table_offset + row * table_ld + j) into a strided destination
// (element out_offset + r * out_ld + j), so a lookup can fill some columns of a concatenated
// input in place, and the same kernel reorders rows of a state by index (beam search).
//
// Ids outside [0, vocab) are clamped (never an out-of-bounds read) and, with EMBEDDING_REPORT,
// counted in flag[0]; flag[1] holds ~(first bad row) (atomicMax of the complement, so a
// zero-filled flag tensor starts empty and the result does not depend on scheduling).
// One workgroup per row; its invocations stride over the columns.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Ids { int ids[]; };
layout(set = 0, binding = 1) readonly buffer Table { float table[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outs[]; };
layout(set = 0, binding = 3) buffer Flag { uint flag[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint dim;
  uint vocab;
  uint table_offset;
  uint table_ld;    // elements between table rows
  uint out_offset;
  uint out_ld;
  uint flags;       // EMBEDDING_* (kernel_flags.h)
} p;

#include "kernel_flags.h"

void main() {
  const uint r = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (r >= p.rows) return;
  const int id = ids[r];
  const bool bad = id < 0 || uint(id) >= p.vocab;
  const uint row = bad ? (id < 0 ? 0u : p.vocab - 1u) : uint(id);
  if (bad && gl_LocalInvocationIndex == 0 && (p.flags & EMBEDDING_REPORT) != 0) {
    atomicAdd(flag[0], 1u);
    atomicMax(flag[1], ~r);
  }
  const uint src = p.table_offset + row * p.table_ld;
  const uint dst = p.out_offset + r * p.out_ld;
  for (uint j = gl_LocalInvocationIndex; j < p.dim; j += gl_WorkGroupSize.x) {
    outs[dst + j] = table[src + j];
  }
}
