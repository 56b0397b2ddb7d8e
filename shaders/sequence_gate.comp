#version 450
// Sequence::close_gate_when_all: once every flag is non-zero, zero the sequence's gate table (the
// workgroup counts of its gated indirect dispatches), so each later gated dispatch runs no
// workgroups. While a flag is unset, count the check in the word after the table
// (Sequence::open_gate_checks: how far the gated work went). One workgroup; no atomics (a shared "open" word is written with the same value by
// every invocation that sees an unset flag, so the order does not matter).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Flags { uint flags[]; };
layout(set = 0, binding = 1) buffer Table { uint table[]; };  // [table_words + 1]

layout(push_constant) uniform Push {
  uint flag_count;
  uint table_words;
} p;

shared uint open_flag;

void main() {
  const uint lane = gl_LocalInvocationIndex;
  if (lane == 0) open_flag = 0;
  barrier();
  for (uint i = lane; i < p.flag_count; i += gl_WorkGroupSize.x) {
    if (flags[i] == 0) open_flag = 1;
  }
  barrier();
  if (open_flag != 0) {  // uniform: read after the barrier by every invocation
    if (lane == 0) table[p.table_words] += 1;
    return;
  }
  for (uint i = lane; i < p.table_words; i += gl_WorkGroupSize.x) table[i] = 0;
}
