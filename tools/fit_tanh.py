#!/usr/bin/env python3
"""Fits the rational tanh of shaders/include/math.glsl (tanh_rational) and checks it in fp32.

tanh(x) ~ x * P(x^2) / Q(x^2) on |x| <= CLAMP (tanh(CLAMP) rounds to 1 in fp32), P and Q of
degree 4, Q(0) = 1: a linearised least-squares fit, reweighted toward the smallest largest
relative error (Lawson's iteration). Prints the GLSL coefficients and the fp32 error of Horner's
evaluation over [-12, 12] and near 0 against double tanh. Needs numpy only.
"""
import numpy as np

CLAMP = 9.0
DEG = 4


def fit(iters=60):
    x = np.linspace(0.0, CLAMP, 40001)[1:]
    t = np.tanh(x)
    y = t / x
    z = (x / CLAMP) ** 2  # scaled for conditioning
    w = np.ones_like(x)
    best = None
    for _ in range(iters):
        a = np.concatenate([np.stack([z**k for k in range(DEG + 1)], 1),
                            -np.stack([y * z**k for k in range(1, DEG + 1)], 1)], 1)
        sol, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
        p, q = sol[:DEG + 1], np.concatenate([[1.0], sol[DEG + 1:]])
        qz = np.polyval(q[::-1], z)
        if np.any(qz <= 0):
            break
        err = np.abs(x * np.polyval(p[::-1], z) / qz - t) / t
        if best is None or err.max() < best[0]:
            best = (err.max(), p.copy(), q.copy())
        w = w / qz * (err / err.max() + 1e-2)
        w /= w.mean()
    scale = np.array([CLAMP ** (-2 * k) for k in range(DEG + 1)])
    return best[1] * scale, best[2] * scale


def eval_f32(p, q, x):
    f = np.float32
    xc = np.clip(x, f(-CLAMP), f(CLAMP))
    z = (xc * xc).astype(f)
    pz, qz = f(0), f(0)
    for k in reversed(range(DEG + 1)):
        pz = (pz * z + f(p[k])).astype(f)
        qz = (qz * z + f(q[k])).astype(f)
    return np.clip((xc * pz / qz).astype(f), f(-1), f(1))


def main():
    p, q = fit()
    near0 = np.geomspace(1e-8, 1.0, 20000)
    x = np.concatenate([np.linspace(-12.0, 12.0, 400001), near0, -near0]).astype(np.float32)
    want = np.tanh(x.astype(np.float64))
    got = eval_f32(p, q, x)
    err = np.abs(got - want)
    print("const float TANH_P[5] = float[5](" + ", ".join(f"{v:.9e}" for v in p) + ");")
    print("const float TANH_Q[5] = float[5](" + ", ".join(f"{v:.9e}" for v in q) + ");")
    print(f"fp32: max abs error {err.max():.2e}, max relative error {(err / np.maximum(np.abs(want), 1e-30)).max():.2e}")


if __name__ == "__main__":
    main()
