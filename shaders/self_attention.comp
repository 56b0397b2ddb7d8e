#version 450
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
// Scaled dot-product self-attention, flash-attention style: one workgroup owns BQ query rows of
// one (batch, head) and streams BK-key tiles of K and V, keeping a running max and sum per row
// (online softmax), so the S x S score matrix never exists.
//
//   e_ij = q_i . k_j * scale,  a_ij = softmax_j(e_ij),  o_i = sum_j a_ij v_j
//
// Masks: keys j >= length[b] get weight 0; with p.causal also keys j > i. Query rows
// i >= length[b] are written as zeros. Lengths are clamped to [0, S].
//
// Layout: q, k, v, out are [B, S, H] row-major, H = heads * D; head h owns columns
// [h*D, (h+1)*D). The WG lanes form BQ teams of T = WG / BQ lanes, one team per query row.
//
//  - T == 1 ("solo", CPU drivers): each lane owns R query rows (rows q0 + lane + WG*r) and reads
//    K/V rows in chunks (vec4 when D % 4 == 0, else float). With USE_SHUFFLE the SG lanes of a
//    subgroup load different chunks of each key/value row and subgroupShuffle hands every chunk
//    to all lanes: one load per chunk per subgroup, as lavapipe serves every load inside a loop
//    lane by lane, even at an address common to all lanes. Without it each lane loads the chunk
//    itself (a broadcast on GPUs). No shared memory, no barriers. Two variants:
//      solo_registers (ACC_IN_REGISTERS, small D): q and o rows in registers, loops fully
//        unrolled (R * BK * D multiply-adds per tile: the host keeps that small, as it sets the
//        LLVM compile time on CPU drivers);
//      solo_memory (large D): running outputs live in the lane's own rows of `out` (read-modify-
//        write once per tile) and the head dims are walked in steps of GS chunks, so code size
//        and registers do not grow with D.
//  - T > 1 ("team", GPUs): K/V tiles are staged through shared memory; lane t of a team owns
//    output dims t, t+T, ... (C = ceil(D/T) of them, in registers); scores are split across the
//    team by key (j = t, t+T, ...) and shared through Ps; every lane of a team then redoes the
//    cheap max/exp over the tile, so no cross-lane reduction is needed.
// Correctness does not depend on the subgroup size (the team path uses no subgroup operations;
// the solo path's shuffles stay inside each full subgroup of SG lanes).
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define STORE_T float16_t
#define STORE4_T f16vec4
#else
#define STORE_T float
#define STORE4_T vec4
#endif

#if USE_SHUFFLE
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

// Loops over per-lane arrays are unrolled so that they index them with constants only:
// lavapipe 22.3 (llvmpipe, LLVM 15) produced partial output rows once 64+-float private arrays
// were dynamically indexed (lowered to scratch memory).
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint D = 64;   // head_dim
layout(constant_id = 4) const uint T = 1;    // lanes per query row (divides WG)
layout(constant_id = 5) const uint BK = 32;  // keys per tile
layout(constant_id = 6) const uint R = 1;    // query rows per lane (solo path only)
layout(constant_id = 7) const uint SG = 8;   // subgroup size (USE_SHUFFLE; divides WG)
layout(constant_id = 8) const bool ACC_IN_REGISTERS = true;  // solo: solo_registers / solo_memory

const uint WG = gl_WorkGroupSize.x;
const bool SOLO = (T == 1u);
const uint BQ = SOLO ? WG * R : WG / T;  // query rows per workgroup
const uint C = (D + T - 1u) / T;    // output dims per lane
const uint DP = D | 1u;             // odd row stride: lanes reading different rows at the same
                                    // column hit different banks
const bool VEC4 = (D & 3u) == 0u;   // rows (and head offsets) are vec4-aligned
const uint W = VEC4 ? 4u : 1u;       // elements per load on the solo path
const uint NCH = D / W;              // loads (chunks of W elements) per K/V row
const uint CPL = (NCH + SG - 1u) / SG;        // solo_registers + USE_SHUFFLE: chunks per lane
const uint GS = USE_SHUFFLE != 0 ? SG : 1u;  // chunks of a row per step (one per lane)
const uint NG = (NCH + GS - 1u) / GS;        // steps per row
const uint QS_SIZE = SOLO ? 1u : BQ * DP;
const uint KS_SIZE = SOLO ? 1u : BK * DP;
const uint VS_SIZE = SOLO ? 1u : BK * D + T;  // + T: the last lane's unused tail dims stay in bounds
const uint PS_SIZE = SOLO ? 1u : BQ * BK;
const float NO_MAX = -3.402823466e38;  // running max before any key (finite: never NaN)

layout(set = 0, binding = 0) readonly buffer Queries { STORE_T qs[]; };
layout(set = 0, binding = 0) readonly buffer Queries4 { STORE4_T qs4[]; };  // same buffer as vec4
layout(set = 0, binding = 1) readonly buffer Keys { STORE_T ks[]; };
layout(set = 0, binding = 2) readonly buffer Values { STORE_T vs[]; };
layout(set = 0, binding = 1) readonly buffer Keys4 { STORE4_T ks4[]; };  // same buffers as vec4
layout(set = 0, binding = 2) readonly buffer Values4 { STORE4_T vs4[]; };
layout(set = 0, binding = 3) readonly buffer Lengths { int lengths[]; };
// The solo path accumulates in (and re-reads) the rows it owns: no other invocation touches them.
layout(set = 0, binding = 4) buffer Output { float outs[]; };
layout(set = 0, binding = 4) buffer Output4 { vec4 outs4[]; };

layout(push_constant) uniform Push {
  uint S;            // sequence length (dim 1 of the tensors)
  uint H;            // hidden = row stride
  uint heads;
  uint qblocks;      // ceil(S / BQ)
  uint total;        // qblocks * heads * batch workgroups of real work
  float scale;       // 1 / sqrt(D)
  uint causal;
  uint has_lengths;  // 0: every length is S (lengths binding unused)
  uint paired;       // query blocks longest and shortest in turn (main)
} p;

shared float Qs[QS_SIZE];
shared float Ks[KS_SIZE];
shared float Vs[VS_SIZE];
shared float Ps[PS_SIZE];

// A chunk: W elements (vec4, or one float in .x) starting at element index i (a multiple of W).
vec4 load_chunk_q(uint i) { return VEC4 ? vec4(qs4[i >> 2]) : vec4(float(qs[i]), 0.0, 0.0, 0.0); }
vec4 load_chunk_k(uint i) { return VEC4 ? vec4(ks4[i >> 2]) : vec4(float(ks[i]), 0.0, 0.0, 0.0); }
vec4 load_chunk_v(uint i) { return VEC4 ? vec4(vs4[i >> 2]) : vec4(float(vs[i]), 0.0, 0.0, 0.0); }
vec4 load_chunk_o(uint i) { return VEC4 ? outs4[i >> 2] : vec4(outs[i], 0.0, 0.0, 0.0); }
void store_chunk_o(uint i, vec4 x) {
  if (VEC4) {
    outs4[i >> 2] = x;
  } else {
    outs[i] = x.x;
  }
}

// Chunk i of the current step, for every lane.
vec4 step_chunk(vec4 mine, uint i) {
#if USE_SHUFFLE
  return VEC4 ? subgroupShuffle(mine, i) : vec4(subgroupShuffle(mine.x, i), 0.0, 0.0, 0.0);
#else
  return mine;
#endif
}

// Solo path, q and o in registers (small D): R rows per lane, everything unrolled.
// kend: keys any row of the workgroup needs.
void solo_registers(uint lane, uint q0, uint len, uint kend, bool causal, uint row_base, uint col0) {
  float q[R * D];
  float o[R * D];
  float m[R];
  float l[R];
  uint row_kend[R];  // row r's keys: [0, row_kend[r])
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    const uint row = q0 + lane + WG * r;
    row_kend[r] = causal ? min(len, row + 1u) : len;
    m[r] = NO_MAX;
    l[r] = 0.0;
    [[unroll]] for (uint d = 0u; d < D; ++d) {
      q[r * D + d] = 0.0;
      if (row < len) q[r * D + d] = float(qs[(row_base + row) * p.H + col0 + d]);
      o[r * D + d] = 0.0;
    }
  }

  for (uint k0 = 0u; k0 < kend; k0 += BK) {
    // Keys past kend (last tile) read row kend - 1 and are masked below.
    uint base[BK];
    [[unroll]] for (uint j = 0u; j < BK; ++j) base[j] = (row_base + min(k0 + j, kend - 1u)) * p.H + col0;
    float s[R * BK];
    [[unroll]] for (uint i = 0u; i < R * BK; ++i) s[i] = 0.0;
#if USE_SHUFFLE
    // Lane l loads chunks l, l+SG, ... of each key row; shuffles hand them to every lane.
    const uint sl = gl_SubgroupInvocationID;
    vec4 kc[BK * CPL];
    [[unroll]] for (uint j = 0u; j < BK; ++j) {
      [[unroll]] for (uint i = 0u; i < CPL; ++i) {
        const uint c = sl + SG * i;
        kc[j * CPL + i] = vec4(0.0);
        if (c < NCH) kc[j * CPL + i] = load_chunk_k(base[j] + c * W);
      }
    }
#endif
    [[unroll]] for (uint d = 0u; d < D; d += W) {
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
#if USE_SHUFFLE
        const vec4 k4 = step_chunk(kc[j * CPL + (d / W) / SG], (d / W) % SG);
#else
        const vec4 k4 = load_chunk_k(base[j] + d);
#endif
        [[unroll]] for (uint r = 0u; r < R; ++r) {
          if (VEC4) {
            s[r * BK + j] += q[r * D + d] * k4.x + q[r * D + d + 1u] * k4.y +
                             q[r * D + d + 2u] * k4.z + q[r * D + d + 3u] * k4.w;
          } else {
            s[r * BK + j] += q[r * D + d] * k4.x;
          }
        }
      }
    }
    float corr[R];
    [[unroll]] for (uint r = 0u; r < R; ++r) {
      float m_new = m[r];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        s[r * BK + j] *= p.scale;
        if (k0 + j < row_kend[r]) m_new = max(m_new, s[r * BK + j]);
      }
      corr[r] = m[r] == NO_MAX ? 0.0 : exp(m[r] - m_new);
      l[r] *= corr[r];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        s[r * BK + j] = k0 + j < row_kend[r] ? exp(s[r * BK + j] - m_new) : 0.0;
        l[r] += s[r * BK + j];
      }
      m[r] = m_new;
    }
#if USE_SHUFFLE
    vec4 vc[BK * CPL];
    [[unroll]] for (uint j = 0u; j < BK; ++j) {
      [[unroll]] for (uint i = 0u; i < CPL; ++i) {
        const uint c = sl + SG * i;
        vc[j * CPL + i] = vec4(0.0);
        if (c < NCH) vc[j * CPL + i] = load_chunk_v(base[j] + c * W);
      }
    }
#endif
    [[unroll]] for (uint d = 0u; d < D; d += W) {
      vec4 acc[R];
      [[unroll]] for (uint r = 0u; r < R; ++r) {
        acc[r] = vec4(o[r * D + d]);
        if (VEC4) acc[r] = vec4(o[r * D + d], o[r * D + d + 1u], o[r * D + d + 2u], o[r * D + d + 3u]);
        acc[r] *= corr[r];
      }
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
#if USE_SHUFFLE
        const vec4 v4 = step_chunk(vc[j * CPL + (d / W) / SG], (d / W) % SG);
#else
        const vec4 v4 = load_chunk_v(base[j] + d);
#endif
        [[unroll]] for (uint r = 0u; r < R; ++r) acc[r] += s[r * BK + j] * v4;
      }
      [[unroll]] for (uint r = 0u; r < R; ++r) {
        o[r * D + d] = acc[r].x;
        if (VEC4) {
          o[r * D + d + 1u] = acc[r].y;
          o[r * D + d + 2u] = acc[r].z;
          o[r * D + d + 3u] = acc[r].w;
        }
      }
    }
  }

  [[unroll]] for (uint r = 0u; r < R; ++r) {
    const uint row = q0 + lane + WG * r;
    if (row < p.S) {
      // A valid row always has key 0, so l >= 1 after its max; padded rows get zeros.
      const float inv_l = 1.0 / l[r];
      [[unroll]] for (uint d = 0u; d < D; ++d) {
        outs[(row_base + row) * p.H + col0 + d] = row < len ? o[r * D + d] * inv_l : 0.0;
      }
    }
  }
}

// Solo path, outputs accumulated in `out` (large D): code and registers independent of D.
// kend: keys any row of the workgroup needs.
void solo_memory(uint lane, uint q0, uint len, uint kend, bool causal, uint row_base, uint col0) {
#if USE_SHUFFLE
  const uint sl = gl_SubgroupInvocationID;
#else
  const uint sl = 0u;
#endif
  float m[R];
  float l[R];
  uint row_kend[R];  // row r's keys: [0, row_kend[r])
  uint at[R];        // element index of row r's head slice in q and out
  bool live[R];      // row exists (< S): its slice of out is ours to use
  bool valid[R];     // row < len: a real query
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    const uint row = q0 + lane + WG * r;
    live[r] = row < p.S;
    valid[r] = row < len;
    row_kend[r] = causal ? min(len, row + 1u) : len;
    at[r] = (row_base + row) * p.H + col0;
    m[r] = NO_MAX;
    l[r] = 0.0;
  }

  for (uint k0 = 0u; k0 < kend; k0 += BK) {
    // Keys past kend (last tile) read row kend - 1 and are masked below.
    uint base[BK];
    [[unroll]] for (uint j = 0u; j < BK; ++j) base[j] = (row_base + min(k0 + j, kend - 1u)) * p.H + col0;

    float s[R * BK];
    [[unroll]] for (uint i = 0u; i < R * BK; ++i) s[i] = 0.0;
    [[dont_unroll]] for (uint g = 0u; g < NG; ++g) {
      const uint own = (g * GS + sl) * W;  // first element of the chunk this lane loads
      vec4 kc[BK];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        kc[j] = vec4(0.0);
        if (own < D) kc[j] = load_chunk_k(base[j] + own);
      }
      [[unroll]] for (uint i = 0u; i < GS; ++i) {
        const uint e = (g * GS + i) * W;
        if (e < D) {  // uniform
          vec4 qc[R];
          [[unroll]] for (uint r = 0u; r < R; ++r) {
            qc[r] = vec4(0.0);
            if (valid[r]) qc[r] = load_chunk_q(at[r] + e);
          }
          [[unroll]] for (uint j = 0u; j < BK; ++j) {
            const vec4 k4 = step_chunk(kc[j], i);
            [[unroll]] for (uint r = 0u; r < R; ++r) s[r * BK + j] += dot(qc[r], k4);
          }
        }
      }
    }

    float corr[R];
    [[unroll]] for (uint r = 0u; r < R; ++r) {
      float m_new = m[r];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        s[r * BK + j] *= p.scale;
        if (k0 + j < row_kend[r]) m_new = max(m_new, s[r * BK + j]);
      }
      corr[r] = m[r] == NO_MAX ? 0.0 : exp(m[r] - m_new);
      l[r] *= corr[r];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        s[r * BK + j] = k0 + j < row_kend[r] ? exp(s[r * BK + j] - m_new) : 0.0;
        l[r] += s[r * BK + j];
      }
      m[r] = m_new;
    }

    [[dont_unroll]] for (uint g = 0u; g < NG; ++g) {
      const uint own = (g * GS + sl) * W;
      vec4 vc[BK];
      [[unroll]] for (uint j = 0u; j < BK; ++j) {
        vc[j] = vec4(0.0);
        if (own < D) vc[j] = load_chunk_v(base[j] + own);
      }
      [[unroll]] for (uint i = 0u; i < GS; ++i) {
        const uint e = (g * GS + i) * W;
        if (e < D) {  // uniform
          vec4 acc[R];
          [[unroll]] for (uint r = 0u; r < R; ++r) {
            acc[r] = vec4(0.0);
            if (k0 != 0u && live[r]) acc[r] = load_chunk_o(at[r] + e) * corr[r];
          }
          [[unroll]] for (uint j = 0u; j < BK; ++j) {
            const vec4 v4 = step_chunk(vc[j], i);
            [[unroll]] for (uint r = 0u; r < R; ++r) acc[r] += s[r * BK + j] * v4;
          }
          [[unroll]] for (uint r = 0u; r < R; ++r) {
            if (live[r]) store_chunk_o(at[r] + e, acc[r]);
          }
        }
      }
    }
  }

  // A valid row always has key 0, so l >= 1 after its max; padded rows get zeros.
  [[unroll]] for (uint r = 0u; r < R; ++r) {
    if (live[r]) {
      const float inv_l = valid[r] ? 1.0 / l[r] : 0.0;
      [[dont_unroll]] for (uint e = 0u; e < D; e += W) {
        store_chunk_o(at[r] + e, valid[r] ? load_chunk_o(at[r] + e) * inv_l : vec4(0.0));
      }
    }
  }
}

void team(uint lane, uint q0, uint len, uint kend, bool causal, uint row_base, uint col0) {
  const uint qi = lane / T;
  const uint t = lane % T;
  const uint row = q0 + qi;
  const uint row_kend = causal ? min(len, row + 1u) : len;  // this row's keys: [0, row_kend)
  for (uint e = lane; e < BQ * D; e += WG) {
    const uint r = e / D, d = e % D;
    Qs[r * DP + d] = q0 + r < len ? float(qs[(row_base + q0 + r) * p.H + col0 + d]) : 0.0;
  }

  float o[C];
  [[unroll]] for (uint c = 0u; c < C; ++c) o[c] = 0.0;
  float m = NO_MAX;
  float l = 0.0;

  for (uint k0 = 0u; k0 < kend; k0 += BK) {
    barrier();  // the previous tile's Ks/Vs/Ps readers are done (and Qs is written)
    for (uint e = lane; e < BK * D; e += WG) {
      const uint j = e / D, d = e % D;
      const uint key = k0 + j;
      float kv = 0.0, vv = 0.0;
      if (key < kend) {
        const uint src = (row_base + key) * p.H + col0 + d;
        kv = float(ks[src]);
        vv = float(vs[src]);
      }
      Ks[j * DP + d] = kv;
      Vs[j * D + d] = vv;
    }
    barrier();

    // Keys of this tile valid for this row: [k0, k0 + nv).
    const uint nv = row_kend > k0 ? min(row_kend - k0, BK) : 0u;
    for (uint j = t; j < nv; j += T) {
      float s = 0.0;
      for (uint d = 0u; d < D; ++d) s += Qs[qi * DP + d] * Ks[j * DP + d];
      Ps[qi * BK + j] = s * p.scale;
    }
    barrier();  // scores of the team's other lanes

    float m_new = m;
    for (uint j = 0u; j < nv; ++j) m_new = max(m_new, Ps[qi * BK + j]);
    const float corr = m == NO_MAX ? 0.0 : exp(m - m_new);
    l *= corr;
    [[unroll]] for (uint c = 0u; c < C; ++c) o[c] *= corr;
    for (uint j = 0u; j < nv; ++j) {
      const float pj = exp(Ps[qi * BK + j] - m_new);
      l += pj;
      [[unroll]] for (uint c = 0u; c < C; ++c) o[c] += pj * Vs[j * D + t + T * c];
    }
    m = m_new;
  }

  if (row < p.S) {
    const bool valid = row < len;
    const float inv_l = 1.0 / l;
    [[unroll]] for (uint c = 0u; c < C; ++c) {
      const uint d = t + T * c;
      if (d < D) outs[(row_base + row) * p.H + col0 + d] = valid ? o[c] * inv_l : 0.0;
    }
  }
}

void main() {
  const uint lane = gl_LocalInvocationID.x;
  const uint gid = gl_WorkGroupID.x +
                   gl_NumWorkGroups.x * (gl_WorkGroupID.y + gl_NumWorkGroups.y * gl_WorkGroupID.z);
  if (gid >= p.total) return;  // folded grid padding: whole workgroup leaves together

  // Under a causal mask block i has i + 1 tiles of keys. Longest first (GPUs: the short ones
  // fill in at the end), or with p.paired longest and shortest in turn, n-1, 0, n-2, 1, ... (CPU
  // drivers, which hand each thread a fixed run of workgroups: any run holds its share of the
  // keys). plan::paired_query_blocks.
  const uint qi = gid % p.qblocks;
  const uint turn = p.paired != 0u ? qi / 2u : qi;               // how many came before, counted from each end
  const bool from_short_end = p.paired != 0u && qi % 2u == 1u;  // paired: odd positions take 0, 1, ...
  const uint qblock = from_short_end ? turn : p.qblocks - 1u - turn;
  const uint rest = gid / p.qblocks;
  const uint head = rest % p.heads;
  const uint b = rest / p.heads;

  const uint q0 = qblock * BQ;
  const int raw_len = p.has_lengths != 0u ? lengths[b] : int(p.S);
  const uint len = uint(clamp(raw_len, 0, int(p.S)));
  const uint col0 = head * D;
  const uint row_base = b * p.S;  // global row index of (b, 0)

  if (q0 >= len) {  // every row of the block is padding (uniform branch)
    for (uint e = lane; e < BQ * D; e += WG) {
      const uint row = q0 + e / D;
      if (row < p.S) outs[(row_base + row) * p.H + col0 + e % D] = 0.0;
    }
    return;
  }

  const bool causal = p.causal != 0u;
  // Keys this workgroup needs: rows >= len are zeros, so no row needs a key >= min(q0+BQ, len).
  const uint kend = causal ? min(len, q0 + BQ) : len;

  if (SOLO && ACC_IN_REGISTERS) {
    solo_registers(lane, q0, len, kend, causal, row_base, col0);
  } else if (SOLO) {
    solo_memory(lane, q0, len, kend, causal, row_base, col0);
  } else {
    team(lane, q0, len, kend, causal, row_base, col0);
  }
}
