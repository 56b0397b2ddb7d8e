#version 450
#extension GL_GOOGLE_include_directive : require
// One beam-search step's candidate merge (docs/model-format.md, "Beam search"), exactly as the
// host's sort-based walk: candidates score(h) + value in fp32, ranked by score descending, then
// alive slot h, then token id; EOS candidates become finished records, the others fill the next
// alive list until it holds K; then the row stops (>= `stop` finished -- K, or more with a
// patience factor -- or the last step) or goes on.
//
// One invocation owns one source row (no barriers, no shared memory). Each alive slot's list
// (TopK's output: values descending, ids ascending among equal values, -1 padding) is a sorted
// stream, so the walk is a K-way merge of the lists' heads. A list's head is NOT simply its
// first untaken entry: after adding score(h), entries with different values can round to the
// same sum, and then the lower id wins even from later in the list. Sums never increase along a
// list (fp addition is monotone), so equal sums form one run from the first untaken entry; the
// head is the lowest id among that run's untaken entries ("taken": a 64-bit mask per list).
//
// Per-list temporaries live in `heads` (a buffer): lavapipe gave partial results for
// dynamically indexed private arrays of >= 64 elements.
//
// Loop budget (lavapipe silently ends loops after ~65535 iterations per invocation in total):
// find_head visits each position at most twice (cursor advance + run scan) -> <= 2 kc. The
// initial heads cost <= K kc (nothing taken yet, one pass). Picks: <= K that join the alive
// list + <= K EOS ones (one EOS per list: TopK's ids are distinct), each a K-head scan plus a
// find_head: 2K (K + 2 kc). The closing loops: <= 2K. K = 63, kc = 64: 4032 + 24066 + 126 =
// 28224 < 32768 (attention_detail::kLoopBudget; src/ops/beam_search.cpp asserts the bound).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Values { float values[]; };        // [R, kc]
layout(set = 0, binding = 1) readonly buffer Ids { int ids[]; };                // [R, kc]
layout(set = 0, binding = 2) readonly buffer ScoreIn { float score_in[]; };     // [R] alive scores, step t
layout(set = 0, binding = 3) buffer ScoreOut { float score_out[]; };            // [R] alive scores, step t + 1
layout(set = 0, binding = 4) buffer AliveCount { uint alive_count[]; };         // [B]
layout(set = 0, binding = 5) buffer Done { uint done[]; };                      // [B]
layout(set = 0, binding = 6) buffer FinCount { uint fin_count[]; };             // [B]
layout(set = 0, binding = 7) writeonly buffer Fin { uvec4 fin[]; };             // [B, F]: step, slot, score bits, finished
layout(set = 0, binding = 8) writeonly buffer HistToken { int hist_token[]; };  // [T, R]
layout(set = 0, binding = 9) writeonly buffer HistParent { int hist_parent[]; };// [T, R]
layout(set = 0, binding = 10) writeonly buffer Parents { int parents[]; };      // [R]
layout(set = 0, binding = 11) writeonly buffer NextTokens { int next_tokens[]; };// [R]
layout(set = 0, binding = 12) buffer Heads { uint heads[]; };                   // [R, 4]: cursor, taken lo, taken hi, head

layout(push_constant) uniform Push {
  uint B;
  uint K;
  uint kc;
  uint T;
  uint t;
  uint F;
  int eos;
  int pad;
  uint stop;  // finished hypotheses that end the row's search
} p;

#include "beam_merge.glsl"

void main() {
  const uint b = (gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y) * gl_WorkGroupSize.x +
                 gl_LocalInvocationIndex;
  if (b >= p.B) return;
  beam_merge(b);
}
