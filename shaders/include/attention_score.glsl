// Score of one source position against a (projected) query, shared by attention_scores.comp and
// attention_fused.comp. The including shader declares, before including this file:
//   buffers  keys[] / keys4[] (STORE_T / STORE_T4), qry[] / qry4[] (float / vec4),
//            vparam[] / vparam4[] (float / vec4, additive only)
//
//   SCORE_MODE 0 (dot-like: dot, general, scaled_dot):  e = scale * sum_j k_j q_j
//   SCORE_MODE 1 (additive / concat):                    e = sum_j v_j tanh(k_j + q_j)
//     (for additive, q is W_q query + b, computed by attention_query.comp)
//
// A position's dot product is either computed by one invocation (SG_CLUSTER = 0), or by a whole
// subgroup (SG_CLUSTER = 1, long keys): its lanes split the dimensions and subgroupAdd the parts.
#ifndef ATTENTION_SCORE_GLSL
#define ATTENTION_SCORE_GLSL

layout(constant_id = 3) const uint SCORE_MODE = 0;
layout(constant_id = 4) const uint KVEC4 = 0;     // keys, queries and v readable as vec4
layout(constant_id = 5) const uint SG_CLUSTER = 0;
// Upper bound of the dims loop's trip count per invocation (the op computes it from dk and the
// smallest stride): a constant bound lets the compiler unroll and keeps the loop uniform.
layout(constant_id = 7) const uint KU = 1;

// Sum over dims j = first, first + stride, ... (counted in vec4 units when KVEC4) of the score
// terms of the key at element offset kbase and the query at qbase; dk = dims per head.
float score_partial(uint kbase, uint qbase, uint dk, uint first, uint stride) {
  float acc = 0.0;
  if (KVEC4 != 0) {
    const uint n4 = dk / 4, kb = kbase / 4, qb = qbase / 4;
    for (uint t = 0; t < KU; ++t) {
      const uint j = first + t * stride;
      if (j >= n4) break;
      const vec4 k = vec4(keys4[kb + j]);
      if (SCORE_MODE == 0) {
        acc += dot(k, qry4[qb + j]);
      } else {
        const vec4 t = k + qry4[qb + j];
        acc += dot(vparam4[j], vec4(attention_tanh(t.x), attention_tanh(t.y),
                                    attention_tanh(t.z), attention_tanh(t.w)));
      }
    }
  } else {
    for (uint t = 0; t < KU; ++t) {
      const uint j = first + t * stride;
      if (j >= dk) break;
      const float k = float(keys[kbase + j]);
      if (SCORE_MODE == 0) {
        acc += k * qry[qbase + j];
      } else {
        acc += vparam[j] * attention_tanh(k + qry[qbase + j]);
      }
    }
  }
  return acc;
}

float finish_score(float sum, float scale) {
  return SCORE_MODE == 0 ? sum * scale : sum;
}

#endif  // ATTENTION_SCORE_GLSL
