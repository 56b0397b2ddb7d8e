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
// The query's vec4 / float at index i is QUERY4(i) / QUERY1(i): qry4[i] / qry[i] unless the
// including shader defines them (attention_fused.comp reads a query it projected itself).
#ifndef ATTENTION_SCORE_GLSL
#define ATTENTION_SCORE_GLSL

#ifndef QUERY4
#define QUERY4(i) qry4[i]
#define QUERY1(i) qry[i]
#endif
#ifndef KEY4  // the key vec4 at index i (attention_fused.comp may read it through a texel view)
#define KEY4(i) vec4(keys4[i])
#endif

layout(constant_id = 3) const uint SCORE_MODE = 0;
layout(constant_id = 4) const uint KVEC4 = 0;     // keys, queries and v readable as vec4
layout(constant_id = 5) const uint SG_CLUSTER = 0;
// Upper bound of the dims loop's trip count per invocation (the op computes it from dk and the
// smallest stride): a constant bound lets the compiler unroll and keeps the loop uniform.
layout(constant_id = 7) const uint KU = 1;

// The query's (and v's) units this invocation uses, kept in registers across all positions of
// its workgroup (they never change within a row): loaded by load_query(), used by
// score_partial(). Above QREG_MAX units the buffers are read directly instead.
const uint QREG_MAX = 64;
const uint QREG = KU < QREG_MAX ? KU : QREG_MAX;
vec4 q_reg[QREG];
vec4 v_reg[QREG];

void load_query(uint qbase, uint dk, uint first, uint stride) {
  if (KU > QREG_MAX) return;
  const uint n = KVEC4 != 0 ? dk / 4 : dk;
  for (uint t = 0; t < QREG; ++t) {
    const uint j = first + t * stride;
    if (j >= n) break;
    if (KVEC4 != 0) {
      q_reg[t] = QUERY4(qbase / 4 + j);
      if (SCORE_MODE != 0) v_reg[t] = vparam4[j];
    } else {
      q_reg[t].x = QUERY1(qbase + j);
      if (SCORE_MODE != 0) v_reg[t].x = vparam[j];
    }
  }
}

// Sum over dims j = first, first + stride, ... (counted in vec4 units when KVEC4) of the score
// terms of the key at element offset kbase and the query at qbase; dk = dims per head.
// `first` and `stride` must be those given to load_query().
float score_partial(uint kbase, uint qbase, uint dk, uint first, uint stride) {
  float acc = 0.0;
  const bool regs = KU <= QREG_MAX;
  if (KVEC4 != 0) {
    const uint n4 = dk / 4, kb = kbase / 4, qb = qbase / 4;
    for (uint t = 0; t < KU; ++t) {
      const uint j = first + t * stride;
      if (j >= n4) break;
      const vec4 k = KEY4(kb + j);
      const vec4 q = regs ? q_reg[t] : QUERY4(qb + j);
      if (SCORE_MODE == 0) {
        acc += dot(k, q);
      } else {
        const vec4 x = k + q;
        acc += dot_tanh_rational(regs ? v_reg[t] : vparam4[j], x);
      }
    }
  } else {
    for (uint t = 0; t < KU; ++t) {
      const uint j = first + t * stride;
      if (j >= dk) break;
      const float k = float(keys[kbase + j]);
      const float q = regs ? q_reg[t].x : QUERY1(qbase + j);
      if (SCORE_MODE == 0) {
        acc += k * q;
      } else {
        acc += (regs ? v_reg[t].x : vparam[j]) * tanh_rational(vec4(k + q)).x;
      }
    }
  }
  return acc;
}

float finish_score(float sum, float scale) {
  return SCORE_MODE == 0 ? sum * scale : sum;
}

#endif  // ATTENTION_SCORE_GLSL
