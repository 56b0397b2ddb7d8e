// Merging the splits of the fused attention (attention_fused.comp) for one row r: its nsplit
// partials (m_c, l_c) in part_ml[base + c] and acc_c in part_acc[(base + c) * dv + j], with
// base = r * nsplit:
//   M = max_c m_c,  L = sum_c l_c exp(m_c - M),  context_j = sum_c acc_c,j exp(m_c - M) / L,
//   weight_s = exp(raw_s - M) / L for s < len, else 0 (L == 0, i.e. len == 0: all 0).
// Used by attention_fused_combine.comp (a second dispatch) and by attention_fused.comp itself
// (MERGE: the row's last workgroup to finish). Fixed reduction order: bit-identical run to run.
// The includer declares part_ml, part_acc (readable) and `shared float coef[]` with room for
// nsplit values, after reduce.glsl.
#ifndef ATTENTION_MERGE_GLSL
#define ATTENTION_MERGE_GLSL

// (M, L) of the row, in every invocation; with store_coef, coef[c] = exp(m_c - M) (0 for an
// empty split, m = -inf), ready to read after the call. Uniform control flow.
vec2 merge_stats(uint base, uint nsplit, bool store_coef) {
  const uint WG = gl_WorkGroupSize.x;
  const uint lane = gl_LocalInvocationIndex;
  float mp = NEG_INF;
  for (uint c = lane; c < nsplit; c += WG) mp = max(mp, part_ml[base + c].x);
  const float M = workgroup_max(mp);
  float lp = 0.0;
  for (uint c = lane; c < nsplit; c += WG) {
    const vec2 ml = part_ml[base + c];
    const float f = ml.y > 0.0 ? exp(ml.x - M) : 0.0;
    if (store_coef) coef[c] = f;
    lp += ml.y * f;
  }
  const float L = workgroup_sum(lp);
  workgroup_barrier();  // coef (workgroup_sum need not have synchronised: single-subgroup path)
  return vec2(M, L);
}

// Context column j of the row (coef from merge_stats).
float merged_context(uint base, uint nsplit, uint dv, uint j, float L) {
  float a = 0.0;
  for (uint c = 0; c < nsplit; ++c) a += part_acc[(base + c) * dv + j] * coef[c];
  return L > 0.0 ? a / L : 0.0;
}

// The attention weight of a position from its raw score.
float merged_weight(float raw_score, bool valid, vec2 ML) {
  return valid ? exp(raw_score - ML.x) / ML.y : 0.0;
}

#endif  // ATTENTION_MERGE_GLSL
