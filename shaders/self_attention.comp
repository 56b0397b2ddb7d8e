#version 450
// Scaled dot-product self-attention, flash-attention style: one workgroup owns BQ query rows of
// one (batch, head) and streams BK-key tiles of K and V through shared memory, keeping a running
// max and sum per row (online softmax), so the S x S score matrix never exists.
//
//   e_ij = q_i . k_j * scale,  a_ij = softmax_j(e_ij),  o_i = sum_j a_ij v_j
//
// Masks: keys j >= length[b] get weight 0; with p.causal also keys j > i. Query rows
// i >= length[b] are written as zeros. Lengths are clamped to [0, S].
//
// Layout: q, k, v, out are [B, S, H] row-major, H = heads * D; head h owns columns
// [h*D, (h+1)*D). Work split: the WG lanes form BQ teams of T = WG / BQ lanes; team qi owns query
// row q0 + qi, lane t of the team owns output dims t, t+T, t+2T, ... (C = ceil(D/T) of them,
// kept in registers). Scores are split across the team by key (j = t, t+T, ...) and shared
// through Ps; every lane of a team then redoes the (cheap) max/exp over the tile so that no
// second barrier or cross-lane reduction is needed. No subgroup operations: correctness does
// not depend on the subgroup size.
#ifdef FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define STORE_T float16_t
#else
#define STORE_T float
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint D = 64;   // head_dim
layout(constant_id = 4) const uint BQ = 8;   // query rows per workgroup (divides WG)
layout(constant_id = 5) const uint BK = 32;  // keys per tile

const uint WG = gl_WorkGroupSize.x;
const uint T = WG / BQ;             // lanes per query row
const uint C = (D + T - 1u) / T;    // output dims per lane
const uint DP = D | 1u;             // odd row stride: lanes reading different rows at the same
                                    // column hit different banks
const bool SOLO = (T == 1u);        // one lane per row: q in registers, no Qs, no Ps barrier
const uint QS_SIZE = SOLO ? 1u : BQ * DP;

layout(set = 0, binding = 0) readonly buffer Queries { STORE_T qs[]; };
layout(set = 0, binding = 1) readonly buffer Keys { STORE_T ks[]; };
layout(set = 0, binding = 2) readonly buffer Values { STORE_T vs[]; };
layout(set = 0, binding = 3) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 4) writeonly buffer Output { float outs[]; };

layout(push_constant) uniform Push {
  uint S;            // sequence length (dim 1 of the tensors)
  uint H;            // hidden = row stride
  uint heads;
  uint qblocks;      // ceil(S / BQ)
  uint total;        // qblocks * heads * batch workgroups of real work
  float scale;       // 1 / sqrt(D)
  uint causal;
  uint has_lengths;  // 0: every length is S (lengths binding unused)
} p;

shared float Qs[QS_SIZE];
shared float Ks[BK * DP];
shared float Vs[BK * D + T];  // + T: the last lane's unused tail dims read in bounds
shared float Ps[BQ * BK];

void main() {
  const uint lane = gl_LocalInvocationID.x;
  const uint gid = gl_WorkGroupID.x +
                   gl_NumWorkGroups.x * (gl_WorkGroupID.y + gl_NumWorkGroups.y * gl_WorkGroupID.z);
  if (gid >= p.total) return;  // folded grid padding: whole workgroup leaves together

  // Last query block first: under a causal mask it has the most keys, so the long workgroups
  // start early and the short ones fill in at the end.
  const uint qblock = p.qblocks - 1u - gid % p.qblocks;
  const uint rest = gid / p.qblocks;
  const uint head = rest % p.heads;
  const uint b = rest / p.heads;

  const uint q0 = qblock * BQ;
  const int raw_len = p.has_lengths != 0u ? lengths[b] : int(p.S);
  const uint len = uint(clamp(raw_len, 0, int(p.S)));

  const uint qi = lane / T;
  const uint t = lane % T;
  const uint row = q0 + qi;
  const uint col0 = head * D;
  const uint row_base = b * p.S;  // global row index of (b, 0)

  if (q0 >= len) {  // every row of the block is padding (uniform branch)
    if (row < p.S) {
      for (uint c = 0u; c < C; ++c) {
        const uint d = t + T * c;
        if (d < D) outs[(row_base + row) * p.H + col0 + d] = 0.0;
      }
    }
    return;
  }

  const bool causal = p.causal != 0u;
  // Keys this workgroup needs: rows >= len are zeros, so no row needs a key >= min(q0+BQ, len).
  const uint kend = causal ? min(len, q0 + BQ) : len;
  const uint row_kend = causal ? min(len, row + 1u) : len;  // this row's keys: [0, row_kend)

  float qreg[SOLO ? C : 1u];
  if (SOLO) {
    for (uint d = 0u; d < D; ++d) {
      qreg[d] = row < len ? float(qs[(row_base + row) * p.H + col0 + d]) : 0.0;
    }
  } else {
    for (uint e = lane; e < BQ * D; e += WG) {
      const uint r = e / D, d = e % D;
      Qs[r * DP + d] = q0 + r < len ? float(qs[(row_base + q0 + r) * p.H + col0 + d]) : 0.0;
    }
  }

  float o[C];
  for (uint c = 0u; c < C; ++c) o[c] = 0.0;
  float m = -3.402823466e38;  // running max (finite: exp(m - m_new) is then 0, never NaN)
  float l = 0.0;              // running sum of exp(e - m)

  for (uint k0 = 0u; k0 < kend; k0 += BK) {
    barrier();  // the previous tile's Ks/Vs/Ps readers are done (and Qs is written)
    for (uint e = lane; e < BK * D; e += WG) {
      const uint j = e / D, d = e % D;
      const uint key = k0 + j;
      const bool ok = key < kend;
      const uint src = (row_base + key) * p.H + col0 + d;
      Ks[j * DP + d] = ok ? float(ks[src]) : 0.0;
      Vs[j * D + d] = ok ? float(vs[src]) : 0.0;
    }
    barrier();

    // Keys of this tile valid for this row: [k0, k0 + nv).
    const uint nv = row_kend > k0 ? min(row_kend - k0, BK) : 0u;
    for (uint j = t; j < nv; j += T) {
      float s = 0.0;
      if (SOLO) {
        for (uint d = 0u; d < D; ++d) s += qreg[d] * Ks[j * DP + d];
      } else {
        for (uint d = 0u; d < D; ++d) s += Qs[qi * DP + d] * Ks[j * DP + d];
      }
      Ps[qi * BK + j] = s * p.scale;
    }
    if (!SOLO) barrier();  // scores of the team's other lanes

    float m_new = m;
    for (uint j = 0u; j < nv; ++j) m_new = max(m_new, Ps[qi * BK + j]);
    const float corr = exp(m - m_new);
    l *= corr;
    for (uint c = 0u; c < C; ++c) o[c] *= corr;
    for (uint j = 0u; j < nv; ++j) {
      const float pj = exp(Ps[qi * BK + j] - m_new);
      l += pj;
      for (uint c = 0u; c < C; ++c) o[c] += pj * Vs[j * D + t + T * c];
    }
    m = m_new;
  }

  if (row < p.S) {
    // Valid rows always have key 0 (l >= exp(0) after the row's max), padded rows get zeros.
    const bool valid = row < len;
    const float inv_l = 1.0 / l;
    for (uint c = 0u; c < C; ++c) {
      const uint d = t + T * c;
      if (d < D) outs[(row_base + row) * p.H + col0 + d] = valid ? o[c] * inv_l : 0.0;
    }
  }
}
