#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Fused decoder-step attention (flash-decoding): scores -> masked softmax -> context in one pass
// over the memory, so keys and values are read once.
//
// Rows r = b * heads + h. Each workgroup owns one (row, split of S, tile of value columns); each
// invocation keeps VPT columns (vec4s with VVEC4) of the context in registers, lane-interleaved.
// It walks its split in blocks of P = WG * R positions: scores of the block into shared memory,
// block max (reduce.glsl), then the online-softmax update with the running max m:
//   alpha = exp(m_old - m_new);  acc = acc * alpha + sum_i exp(e_i - m_new) v_i;  l likewise.
// Positions at or beyond len[b] are never read.
//   direct (one split):  context = acc / l, and with weights requested the raw scores written
//                        on the way are normalised at the end by the same workgroup.
//   split:               (m, l) per (row, split) and acc per (row, split, column) go to partials,
//                        merged (attention_merge.glsl) and the weights normalised either by the
//                        row's last workgroup to finish (MERGE > 0) or by a second dispatch,
//                        attention_fused_combine.comp.
// MERGE: each workgroup of a split row counts itself in arrivals[r] once its partials are
// written and visible (coherent buffers, memoryBarrierBuffer, then the atomic: the
// threadfence-reduction pattern); the one that counts last merges the row and resets the count
// to 0 for the next dispatch. It saves the combine's dispatch where merging is cheap
// (plan::fused_attention decides).
// With more than one column tile, every tile recomputes the scores of its split (keys re-read);
// the op picks VPT to cover dv in one tile whenever registers allow.
// QP > 0 (general / additive scores): qry is the raw query [B, Qs] and each workgroup first
// projects it, q' = W_q qry[b] (+ qbias), into shared memory (QP >= Hk, Qs floats), which saves the
// separate attention_query dispatch of every decoder step. The workgroups of a split row each
// repeat the projection (the planner allows that while it is a small share of their own work).
//
// Layout: keys STORE_T [B, S, Hk], values STORE_T [B, S, H], query f32 [B, Qs] (projected query
// for general / additive, or the raw one with QP > 0; a raw one's rows q_ld apart from q_off),
// v f32 [dk] (additive), lengths i32 [B],
// part_ml vec2 [rows, nsplit], part_acc f32 [rows, nsplit, dv], raw f32 [rows, S], weights
// STORE_T [rows, S], context f32 [B, H] (rows ctx_ld apart from ctx_off).
#include "attention_common.glsl"
#include "reduce.glsl"

layout(constant_id = 6) const uint R = 1;       // positions per invocation per block
// (constant 7 is KU, in attention_score.glsl)
layout(constant_id = 8) const uint VPT = 4;     // value columns (vec4s with VVEC4) per invocation
layout(constant_id = 9) const uint VVEC4 = 0;   // H and dv multiples of 4: vec4 value loads
layout(constant_id = 10) const uint QP = 0;     // > 0: project the query here (shared floats)
// Key and value vec4s through texel views kt / vt of the same tensors (fp32, KVEC4 and VVEC4;
// plan::texel_loads, docs/kernels.md).
layout(constant_id = 11) const bool TEXEL = false;
layout(constant_id = 12) const uint MERGE = 0;   // > 0: merge split rows here, nsplit <= MERGE
// QP > 0 with subgroups and Qs % 4 == 0: > 0 makes the lanes of a subgroup split the raw query's
// vec4s (at most QPL each, kept in registers) and reduce each output by subgroupAdd, instead of
// one invocation per output reading all of the query from shared memory (project_query).
layout(constant_id = 13) const uint QPL = 0;
// The keys are the values (one tensor, Hk = H, dk = dv; CPU drivers, one subgroup per
// workgroup, a subgroup per score, one column tile with VPT = KU): no block of scores, each
// key vec4 fetched once for its score and its context term (docs/kernels.md).
layout(constant_id = 16) const bool STREAM = false;
// STREAM: the split is walked in POS_STREAMS segments in step, a position of each per step
// under one running max, so that a CPU thread keeps that many runs of loads in flight.
layout(constant_id = 17) const uint POS_STREAMS = 1;
// STREAM with keys and values apart (additive; dot-like over two tensors; large memories): each
// lane also fetches its VPT value units of each position, after its score.
layout(constant_id = 18) const bool STREAM_VALUES = false;

layout(set = 0, binding = 0) readonly buffer Keys { STORE_T keys[]; };
layout(set = 0, binding = 0) readonly buffer Keys4 { STORE_T4 keys4[]; };
layout(set = 0, binding = 1) readonly buffer Values { STORE_T values[]; };
layout(set = 0, binding = 1) readonly buffer Values4 { STORE_T4 values4[]; };
layout(set = 0, binding = 2) readonly buffer Qry { float qry[]; };
layout(set = 0, binding = 2) readonly buffer Qry4 { vec4 qry4[]; };
layout(set = 0, binding = 3) readonly buffer VParam { float vparam[]; };
layout(set = 0, binding = 3) readonly buffer VParam4 { vec4 vparam4[]; };
layout(set = 0, binding = 4) readonly buffer Lengths { int lengths[]; };
// Coherent: with MERGE another workgroup reads them in the same dispatch.
layout(set = 0, binding = 5) coherent buffer PartML { vec2 part_ml[]; };
layout(set = 0, binding = 6) coherent buffer PartAcc { float part_acc[]; };
layout(set = 0, binding = 7) coherent buffer Raw { float raw[]; };
layout(set = 0, binding = 8) writeonly buffer Weights { STORE_T weights[]; };
layout(set = 0, binding = 9) writeonly buffer Context { float context[]; };
layout(set = 0, binding = 10) readonly buffer QW { float qw[]; };  // W_q [Hk, Qs] (QP > 0)
layout(set = 0, binding = 10) readonly buffer QW4 { vec4 qw4[]; };
layout(set = 0, binding = 11) readonly buffer QBias { float qbias[]; };  // [Hk]
layout(set = 0, binding = 12) uniform usamplerBuffer kt;  // TEXEL: binding 0 as 16-byte texels
layout(set = 0, binding = 13) uniform usamplerBuffer vt;  // TEXEL: binding 1 as 16-byte texels
layout(set = 0, binding = 14) coherent buffer Arrivals { uint arrivals[]; };  // [rows] (MERGE)
layout(set = 0, binding = 15) uniform usamplerBuffer qwt;  // TEXEL and QP > 0: binding 10 as texels

layout(push_constant) uniform Push {
  uint S;
  uint Hk;       // key row stride
  uint dk;       // key dims per head
  uint Qs;       // query row stride
  uint H;        // value row stride = context row stride
  uint dv;       // value dims per head
  uint heads;
  uint rows;     // B * heads
  uint nsplit;   // splits of S per row
  uint chunk;    // positions per split
  uint nhtiles;  // column tiles per row
  float scale;
  uint flags;    // FUSED_* (kernel_flags.h)
  uint ctx_off;  // context[ctx_off + b * ctx_ld + h * dv + j] (direct): a view of a wider matrix
  uint ctx_ld;
  uint q_off;    // query row b at qry[q_off + b * q_ld] (a view; multiples of 4 where read as vec4)
  uint q_ld;
} p;

shared float qp[QP + 1];  // the projected query of this workgroup's row (QP > 0)
#define QUERY4(i) (QP > 0 ? vec4(qp[4 * (i)], qp[4 * (i) + 1], qp[4 * (i) + 2], qp[4 * (i) + 3]) : qry4[i])
#define QUERY1(i) (QP > 0 ? qp[i] : qry[i])
#define KEY4(i) (TEXEL ? uintBitsToFloat(texelFetch(kt, int(i))) : vec4(keys4[i]))
#define VALUE4(i) (TEXEL ? uintBitsToFloat(texelFetch(vt, int(i))) : vec4(values4[i]))
#include "attention_score.glsl"

// q' = W_q qry[b] (+ qbias) into qp, the invocations splitting the Hk outputs. The raw query
// is staged in shared memory first (QP >= Qs too), as every invocation reads all of it; with
// TEXEL, W_q's vec4s come through its texel view (CPU drivers, docs/kernels.md).
shared vec4 qraw4[QP / 4 + 1];
#define QW4(i) (TEXEL ? uintBitsToFloat(texelFetch(qwt, int(i))) : qw4[i])
void project_query(uint b, uint sg_rank, uint sg_count) {
#if USE_SUBGROUP
  if (QPL > 0) {
    // A subgroup computes one output at a time: its lanes read neighbouring vec4s of W_q's row
    // (one contiguous run) against their share of the query, units j = rank + t * count.
    const uint n = p.Qs / 4;
    vec4 qr[QPL + 1];
    for (uint t = 0; t < QPL; ++t) {
      const uint j = sg_rank + t * sg_count;
      qr[t] = j < n ? qry4[(p.q_off + b * p.q_ld) / 4 + j] : vec4(0.0);
    }
    for (uint a = gl_SubgroupID; a < p.Hk; a += gl_NumSubgroups) {
      float part = 0.0;
      for (uint t = 0; t < QPL; ++t) {
        const uint j = sg_rank + t * sg_count;
        if (j < n) part += dot(QW4(a * n + j), qr[t]);
      }
      const float sum = subgroupAdd(part);
      if (sg_rank == 0) qp[a] = sum + ((p.flags & FUSED_QUERY_BIAS) != 0 ? qbias[a] : 0.0);
    }
    workgroup_barrier();
    return;
  }
#endif
  const uint WG = gl_WorkGroupSize.x;
  const uint n = (p.Qs + 3) / 4;
  for (uint k = gl_LocalInvocationIndex; k < n; k += WG) {
    vec4 v;
    for (uint c = 0; c < 4; ++c) v[c] = 4 * k + c < p.Qs ? qry[p.q_off + b * p.q_ld + 4 * k + c] : 0.0;
    qraw4[k] = v;
  }
  workgroup_barrier();
  const bool vec = p.Qs % 4 == 0;
  for (uint a = gl_LocalInvocationIndex; a < p.Hk; a += WG) {
    float sum = (p.flags & FUSED_QUERY_BIAS) != 0 ? qbias[a] : 0.0;
    if (vec) {
      for (uint k = 0; k < n; ++k) sum += dot(QW4(a * n + k), qraw4[k]);
    } else {
      for (uint k = 0; k < p.Qs; ++k) sum += qw[a * p.Qs + k] * qraw4[k / 4][k % 4];
    }
    qp[a] = sum;
  }
  workgroup_barrier();
}

shared float pw[gl_WorkGroupSize.x * R];  // scores, then exp(score - m) of the current block
shared float coef[MERGE + 1];  // the merge's per-split factors
shared uint merging;           // this workgroup arrived last: it merges the row
#include "attention_merge.glsl"

// MERGE: called by every workgroup of split row r once its partials are written; the last to
// arrive writes the row's context and (want_weights) its weights.
void merge_if_last(uint r, uint b, uint h, uint len, bool want_weights) {
  const uint WG = gl_WorkGroupSize.x;
  const uint lane = gl_LocalInvocationIndex;
  memoryBarrierBuffer();  // this invocation's partials before the arrival
  workgroup_barrier();    // ... and every invocation's
  if (lane == 0) merging = atomicAdd(arrivals[r], 1u) == p.nsplit * p.nhtiles - 1 ? 1u : 0u;
  workgroup_barrier();
  if (merging == 0) return;
  memoryBarrierBuffer();  // the other workgroups' partials, after their arrivals
  const uint base = r * p.nsplit;
  const vec2 ML = merge_stats(base, p.nsplit, true);
  const uint out_base = p.ctx_off + b * p.ctx_ld + h * p.dv;
  for (uint j = lane; j < p.dv; j += WG) context[out_base + j] = merged_context(base, p.nsplit, p.dv, j, ML.y);
  if (want_weights) {
    for (uint s = lane; s < p.S; s += WG) {
      weights[r * p.S + s] = STORE_T(merged_weight(raw[r * p.S + s], s < len, ML));
    }
  }
  if (lane == 0) arrivals[r] = 0;  // the next dispatch counts from 0 (ordered by its barrier)
}

void main() {
#if USE_SUBGROUP
  const uint sg_count = subgroupAdd(1u);  // dense lane count/rank: right for partial subgroups
  const uint sg_rank = subgroupExclusiveAdd(1u);
#else
  const uint sg_count = 1, sg_rank = 0;  // (only project_query takes them here: QPL = 0)
#endif
  const uint WG = gl_WorkGroupSize.x;
  const uint P = WG * R;
  const uint lane = gl_LocalInvocationIndex;
  const uint id = linear_workgroup();
  if (id >= p.rows * p.nhtiles * p.nsplit) return;
  const uint split = id % p.nsplit;
  const uint t = (id / p.nsplit) % p.nhtiles;
  const uint r = id / (p.nsplit * p.nhtiles);
  const uint b = r / p.heads, h = r % p.heads;
  const uint len = clamped_length(lengths[b], p.S);
  const uint s_begin = split * p.chunk;
  const uint s_end = min(s_begin + p.chunk, len);
  const uint qbase = QP > 0 ? h * p.dk : p.q_off + b * p.q_ld + h * p.dk;  // in qp, or in qry
  const uint HTC = gl_WorkGroupSize.x * VPT * (VVEC4 != 0 ? 4 : 1);  // columns per tile
  const uint col_base = t * HTC;  // first value column of this tile, within the head
  const uint ncols = min(HTC, p.dv - col_base);
  const bool want_weights = (p.flags & FUSED_WANT_WEIGHTS) != 0;
  const bool direct = (p.flags & FUSED_DIRECT) != 0;
  const bool write_raw = want_weights && t == 0;

  // Invocation `lane` owns units u = lane + k * WG (k < VPT) of the tile: columns u, or the
  // vec4s of columns 4u .. 4u + 3.
  const uint nunits = VVEC4 != 0 ? ncols / 4 : ncols;
  vec4 acc4[VPT];
  float acc1[VPT];
  for (uint k = 0; k < VPT; ++k) {
    acc4[k] = vec4(0.0);
    acc1[k] = 0.0;
  }

  // (Uniform per workgroup: a split that starts beyond the row's length scores nothing.)
  if (QP > 0 && s_begin < s_end) project_query(b, sg_rank, sg_count);
#if USE_SUBGROUP
  if (SG_CLUSTER != 0) load_query(qbase, p.dk, sg_rank, sg_count); else
#endif
  load_query(qbase, p.dk, 0, 1);

  float m = NEG_INF;     // running max (the same in every invocation)
  float l_part = 0.0;    // this invocation's share of the running sum
#if USE_SUBGROUP
  if (STREAM) {
    // Unit t of this lane is key unit sg_rank + t * sg_count = value unit lane + t * WG (one
    // subgroup holds the workgroup). The context and the sum rescale at every step, with no
    // branch: lavapipe runs a branch's body whatever the condition, under a mask (measured:
    // the branch-free loop was the faster). Step i takes position s_begin + i + g * seg of
    // each segment g (the last segments may run out first: weight 0, no loads).
    const uint n4 = p.dk / 4;
    const uint seg = s_end > s_begin ? (s_end - s_begin + POS_STREAMS - 1) / POS_STREAMS : 0;
    for (uint i = 0; i < seg; ++i) {
      vec4 kv[POS_STREAMS * KU];
      vec4 vv[POS_STREAMS * VPT];  // STREAM_VALUES
      float e[POS_STREAMS];
      float e_max = NEG_INF;
      for (uint g = 0; g < POS_STREAMS; ++g) {
        const uint s = s_begin + i + g * seg;
        const bool here = s < s_end;
        const uint kb4 = ((b * p.S + s) * p.Hk + h * p.dk) / 4;
        float part = 0.0;
        for (uint k = 0; k < KU; ++k) {
          const uint j = sg_rank + k * sg_count;
          kv[g * KU + k] = here && j < n4 ? KEY4(kb4 + j) : vec4(0.0);
          if (SCORE_MODE == 0) {
            part += dot(kv[g * KU + k], q_reg[k]);
          } else if (j < n4) {
            part += dot_tanh_rational(v_reg[k], kv[g * KU + k] + q_reg[k]);
          }
        }
        e[g] = finish_score(subgroupAdd(part), p.scale);
        if (STREAM_VALUES) {
          const uint vb4 = ((b * p.S + s) * p.H + h * p.dv) / 4 + lane;
          for (uint k = 0; k < VPT; ++k) {
            vv[g * VPT + k] = here && lane + k * WG < nunits ? VALUE4(vb4 + k * WG) : vec4(0.0);
          }
        }
        // Position s counts in lane s mod WG (its raw score, its share of the sum), as in
        // the blocks below: each lane sums a WG-th of the terms, and the weights'
        // normalisation reads back what the same invocation wrote.
        if (write_raw && here && s % WG == lane) raw[r * p.S + s] = e[g];
        if (here) e_max = max(e_max, e[g]);
      }
      const float m_new = max(m, e_max);
      const float alpha = exp(m - m_new);  // 0 on the first step (m = -inf)
      for (uint k = 0; k < VPT; ++k) acc4[k] *= alpha;
      l_part *= alpha;
      m = m_new;
      for (uint g = 0; g < POS_STREAMS; ++g) {
        const uint s = s_begin + i + g * seg;
        const float w = s < s_end ? exp(e[g] - m) : 0.0;
        if (s % WG == lane) l_part += w;
        for (uint k = 0; k < VPT; ++k) acc4[k] += w * (STREAM_VALUES ? vv[g * VPT + k] : kv[g * KU + k]);
      }
    }
  } else
#endif
  for (uint blk = s_begin; blk < s_end; blk += P) {
    const uint n = min(P, s_end - blk);
    // 1. scores of the block
#if USE_SUBGROUP
    if (SG_CLUSTER != 0) {
      for (uint i = gl_SubgroupID; i < n; i += gl_NumSubgroups) {
        const uint kbase = (b * p.S + blk + i) * p.Hk + h * p.dk;
        const float e = finish_score(subgroupAdd(score_partial(kbase, qbase, p.dk, sg_rank, sg_count)), p.scale);
        if (sg_rank == 0) pw[i] = e;
      }
    } else
#endif
    {
      for (uint k = 0; k < R; ++k) {
        const uint i = lane + k * WG;
        if (i < n) {
          const uint kbase = (b * p.S + blk + i) * p.Hk + h * p.dk;
          const float e = finish_score(score_partial(kbase, qbase, p.dk, 0, 1), p.scale);
          pw[i] = e;
        }
      }
    }
    workgroup_barrier();
    // 2. block max -> new running max; p_i = exp(e_i - m_new)
    // Each invocation handles positions i = lane + k * WG of the block from here on (and so,
    // as blocks start at multiples of P, positions s = lane (mod WG) of its split).
    float bm = NEG_INF;
    for (uint k = 0; k < R; ++k) {
      const uint i = lane + k * WG;
      if (i < n) {
        bm = max(bm, pw[i]);
        if (write_raw) raw[r * p.S + blk + i] = pw[i];
      }
    }
    const float m_new = max(m, workgroup_max(bm));
    const float alpha = exp(m - m_new);  // 0 on the first block (m = -inf)
    l_part *= alpha;
    for (uint k = 0; k < R; ++k) {
      const uint i = lane + k * WG;
      if (i < n) {
        const float pe = exp(pw[i] - m_new);
        pw[i] = pe;
        l_part += pe;
      }
    }
    workgroup_barrier();
    // 3. rescale and accumulate the value columns: positions outer, the VPT registers inner
    if (VVEC4 != 0) {
      const uint row4 = p.H / 4;
      const uint base4 = ((b * p.S + blk) * p.H + h * p.dv + col_base) / 4 + lane;
      for (uint k = 0; k < VPT; ++k) acc4[k] *= alpha;
      for (uint i = 0; i < n; ++i) {
        const float w = pw[i];
        const uint rb = base4 + i * row4;
        for (uint k = 0; k < VPT; ++k) {
          if (lane + k * WG < nunits) {
            const uint at = rb + k * WG;
            acc4[k] += w * VALUE4(at);
          }
        }
      }
    } else {
      const uint base = (b * p.S + blk) * p.H + h * p.dv + col_base + lane;
      for (uint k = 0; k < VPT; ++k) acc1[k] *= alpha;
      for (uint i = 0; i < n; ++i) {
        const float w = pw[i];
        const uint rb = base + i * p.H;
        for (uint k = 0; k < VPT; ++k) {
          if (lane + k * WG < nunits) acc1[k] += w * float(values[rb + k * WG]);
        }
      }
    }
    m = m_new;
    workgroup_barrier();  // pw is rewritten by the next block
  }
  const float l = workgroup_sum(l_part);

  // Each invocation writes its own units (no barrier needed).
  const uint out_base = direct ? p.ctx_off + b * p.ctx_ld + h * p.dv + col_base
                               : (r * p.nsplit + split) * p.dv + col_base;
  for (uint k = 0; k < VPT; ++k) {
    const uint u = lane + k * WG;
    if (u >= nunits) break;
    if (VVEC4 != 0) {
      for (uint c = 0; c < 4; ++c) {
        const float v = direct ? (l > 0.0 ? acc4[k][c] / l : 0.0) : acc4[k][c];
        if (direct) context[out_base + 4 * u + c] = v; else part_acc[out_base + 4 * u + c] = v;
      }
    } else {
      const float v = direct ? (l > 0.0 ? acc1[k] / l : 0.0) : acc1[k];
      if (direct) context[out_base + u] = v; else part_acc[out_base + u] = v;
    }
  }
  if (!direct && t == 0 && lane == 0) part_ml[r * p.nsplit + split] = vec2(m, l);
  if (MERGE > 0 && !direct) {
    merge_if_last(r, b, h, len, want_weights);
    return;
  }

  if (direct && write_raw) {
    // Raw score s was written by this same invocation (s = lane mod WG, split 0 starts at 0).
    for (uint s = lane; s < p.S; s += WG) {
      weights[r * p.S + s] = STORE_T(s < len ? exp(raw[r * p.S + s] - m) / l : 0.0);
    }
  }
}
