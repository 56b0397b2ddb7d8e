// Elementwise math every family of kernels shares.
#ifndef VKRNN_MATH_GLSL
#define VKRNN_MATH_GLSL

// tanh with fp32 relative accuracy near 0 and no inf/inf for large |x|: GLSL's tanh is often
// (e^2x - 1)/(e^2x + 1), which loses digits near 0 and can give NaN past |x| ~ 44.
float tanh_accurate(float x) {
  const float a = abs(x);
  if (a < 0.25) {
    // Taylor series to x^9: the first dropped term is < 2e-8 relative at 0.25.
    const float x2 = x * x;
    return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
  }
  const float e = exp(-2.0 * min(a, 20.0));
  return sign(x) * ((1.0 - e) / (1.0 + e));
}

// tanh as x P(x^2) / Q(x^2) on |x| <= 9 (tanh(9) rounds to 1 in fp32), degree 4 over 4: no exp
// and no branch (lavapipe runs both sides of tanh_accurate's), for the additive attention
// score, which takes one tanh per key element. Coefficients and the error check: tools/fit_tanh.py
// (fp32 error at most 4.0e-7 relative; tanh_accurate's 2.7e-7). Per component of a vec4.
// The numerator c P(c^2) and denominator Q(c^2) of x clamped to c in [-9, 9].
void tanh_rational_terms(vec4 x, out vec4 num, out vec4 den) {
  const vec4 c = clamp(x, -9.0, 9.0);
  const vec4 z = c * c;
  num = c * ((((1.216983374e-08 * z + 1.965587617e-05) * z + 3.433256307e-03) * z + 1.332704184e-01) * z +
             9.999998618e-01);
  den = (((7.262919494e-07 * z + 3.186823874e-04) * z + 2.563520420e-02) * z + 4.666028888e-01) * z + 1.0;
}

vec4 tanh_rational(vec4 x) {
  vec4 num, den;
  tanh_rational_terms(x, num, den);
  // Within [-1, 1] (rounding takes the fit up to 4e-7 past 1); NaN stays NaN, which clamp need not keep.
  return mix(clamp(num / den, -1.0, 1.0), x, isnan(x));
}

// dot(v, tanh_rational(x)) with one division instead of four: the four quotients v_i num_i / den_i
// over their common denominator den_0 den_1 den_2 den_3 (a/b + c/d = (ad + cb) / bd, twice). Each
// den lies in [1, 410], so the products stay far inside fp32's range; the result differs from
// the four quotients' by rounding only (the clamp of each tanh to [-1, 1], 4e-7 at most, is left
// out). A NaN in x gives NaN, as tanh_rational's does. The additive score takes one per vec4 of
// a key: 2-5% faster on lavapipe (W1.additive); the rest of the rational is most of the score's
// cost there (docs/kernels.md).
float dot_tanh_rational(vec4 v, vec4 x) {
  vec4 num, den;
  tanh_rational_terms(x, num, den);
  num *= v;
  const float n01 = num.x * den.y + num.y * den.x, d01 = den.x * den.y;
  const float n23 = num.z * den.w + num.w * den.z, d23 = den.z * den.w;
  const float r = (n01 * d23 + n23 * d01) / (d01 * d23);
  return any(isnan(x)) ? uintBitsToFloat(0x7fc00000u) : r;
}

float sigmoid_accurate(float x) {
  return 1.0 / (1.0 + exp(-x));
}

#endif  // VKRNN_MATH_GLSL
