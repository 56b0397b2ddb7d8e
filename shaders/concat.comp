#version 450
// Row-wise concatenation of up to four strided matrices:
//   out[out_offset + r * out_ld + start_k + j] = src_k[offset_k + r * ld_k + j]
// for r < rows, j < cols_k, start_k = cols_0 + ... + cols_{k-1}. One invocation per output
// element (a copy: no arithmetic). Unused sources have cols_k = 0.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer S0 { float s0[]; };
layout(set = 0, binding = 1) readonly buffer S1 { float s1[]; };
layout(set = 0, binding = 2) readonly buffer S2 { float s2[]; };
layout(set = 0, binding = 3) readonly buffer S3 { float s3[]; };
layout(set = 0, binding = 4) writeonly buffer Out { float outs[]; };

layout(push_constant) uniform Push {
  uvec4 cols;  // vectors first: 16-byte aligned, so the C++ struct has no padding
  uvec4 offset;
  uvec4 ld;
  uint rows;
  uint width;  // sum of cols
  uint out_offset;
  uint out_ld;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_NumWorkGroups.x * gl_WorkGroupSize.x * gl_GlobalInvocationID.y;
  if (i >= p.rows * p.width) return;
  const uint r = i / p.width;
  uint c = i - r * p.width;
  float x;
  if (c < p.cols.x) {
    x = s0[p.offset.x + r * p.ld.x + c];
  } else if ((c -= p.cols.x) < p.cols.y) {
    x = s1[p.offset.y + r * p.ld.y + c];
  } else if ((c -= p.cols.y) < p.cols.z) {
    x = s2[p.offset.z + r * p.ld.z + c];
  } else {
    c -= p.cols.z;
    x = s3[p.offset.w + r * p.ld.w + c];
  }
  outs[p.out_offset + r * p.out_ld + (i - r * p.width)] = x;
}
