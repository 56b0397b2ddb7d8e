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

float sigmoid_accurate(float x) {
  return 1.0 / (1.0 + exp(-x));
}

#endif  // VKRNN_MATH_GLSL
