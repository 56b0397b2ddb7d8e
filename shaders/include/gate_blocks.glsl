// The recurrent layers' packed weight layout on CPU drivers (ops::pack_gate_blocks, plan::Rnn):
// a matrix of `gates` x h rows per block of directions, stored in blocks of `block` hidden units
// (the last may hold fewer: n), each block's gates * n rows gate by gate, 16-byte unit by unit.
// Unit u of row `row` (rows of `units` units) is unit walk.x + u * walk.y of the buffer: the rows
// a per-step workgroup owns, so at each step of K it reads one contiguous run, as a copy does,
// instead of a unit from each of gates * block rows on as many pages (docs/kernels.md).
// W_hh: gates = G per direction; W_ih: gates = D * G (both directions in one block of rows).
#ifndef VKRNN_GATE_BLOCKS_GLSL
#define VKRNN_GATE_BLOCKS_GLSL
uvec2 gate_block_walk(uint row, uint units, uint gates, uint h, uint block) {
  const uint rows = gates * h, d = row / rows, g = (row - d * rows) / h, j = row - d * rows - g * h;
  const uint j0 = j / block * block, n = min(block, h - j0);
  return uvec2((d * rows + j0 * gates) * units + g * n + j - j0, gates * n);
}
#endif  // VKRNN_GATE_BLOCKS_GLSL
