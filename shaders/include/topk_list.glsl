// An invocation's best k entries as a sorted list (order keys of float_order.glsl, and their
// indices), and the merge of the workgroup's lists: topk_row.glsl's and gemv_beam.comp's.
// The includer declares K_MAX and includes reduce.glsl.
#ifndef TOPK_LIST_GLSL
#define TOPK_LIST_GLSL

const uint TOPK_NONE = 0xffffffffu;

// An empty list: key 0 lies below every entry's key.
void topk_clear(out uint key[K_MAX], out uint idx[K_MAX]) {
  for (uint j = 0; j < K_MAX; ++j) {
    key[j] = 0u;
    idx[j] = TOPK_NONE;
  }
}

// Entry (x, n) into the list of the best k (keys down, then indices up, so an equal key keeps
// the lower index whatever order the entries come in).
void topk_offer(inout uint key[K_MAX], inout uint idx[K_MAX], uint k, uint x, uint n) {
  if (!(x > key[k - 1] || (x == key[k - 1] && n < idx[k - 1]))) return;
  uint pos = k - 1;
  while (pos > 0 && (x > key[pos - 1] || (x == key[pos - 1] && n < idx[pos - 1]))) {
    key[pos] = key[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  key[pos] = x;
  idx[pos] = n;
}

// Every invocation's list merged: k rounds, each takes the best head (ties: the lowest index)
// and pops it. EMIT sees round r's key `best` and index `win` (TOPK_NONE once the lists are
// spent). Every invocation of the workgroup runs it in uniform control flow.
#define TOPK_MERGE(key, idx, k, EMIT)                                                       \
  {                                                                                          \
    uint head_ = 0;                                                                          \
    for (uint r = 0; r < (k); ++r) {                                                         \
      const uint hk_ = head_ < (k) ? key[head_] : 0u;                                        \
      const uint best = workgroup_max_uint(hk_);                                             \
      const uint win = workgroup_min_uint(hk_ != 0u && hk_ == best ? idx[head_] : TOPK_NONE); \
      if (hk_ != 0u && idx[head_] == win) ++head_;                                           \
      EMIT                                                                                   \
    }                                                                                        \
  }

#endif  // TOPK_LIST_GLSL
