// A running softmax partial of a row's entries (gemv_argmax.comp and gemv_beam.comp, whose
// workgroups each see a block of a row and publish its partial for the last one to merge):
// the order key of the max (0: empty; float_order.glsl), its lowest index, the max, and
// sum exp(y - max) over the entries seen.
#ifndef VKRNN_SOFTMAX_PARTIAL_GLSL
#define VKRNN_SOFTMAX_PARTIAL_GLSL

const uint PARTIAL_NONE = 0xffffffffu;

struct Partial {
  uint key, index;
  float m, sum;
};

const Partial PARTIAL_EMPTY = Partial(0u, PARTIAL_NONE, -1.0 / 0.0, 0.0);

// sum exp(y - from) re-expressed against `to` >= from (an empty sum stays 0; equal maxima,
// -inf or +inf included, need no exp).
float rescale(float sum, float from, float to) { return sum == 0.0 || from == to ? sum : sum * exp(from - to); }

Partial merge_partial(Partial a, Partial b) {
  const bool b_wins = b.key > a.key || (b.key == a.key && b.index < a.index);
  const Partial w = b_wins ? b : a, l = b_wins ? a : b;
  return Partial(w.key, w.index, w.m, w.sum + rescale(l.sum, l.m, w.m));
}

#endif  // VKRNN_SOFTMAX_PARTIAL_GLSL
