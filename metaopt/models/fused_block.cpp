// Batch norm with the batch's statistics, then 2x2 max-pool (stride 2, floor), then ReLU, on a float (or double) map
// in either layout (NCHW, channels-last), fused for the CPU: the forward pass reads the map twice (statistics,
// pooling) and writes only the pooled quarter; the backward pass reads it twice more and writes its gradient once;
// the double backward (the backward's own derivative, for second-order meta-gradients) reads the map and its
// cotangent twice and writes their gradients once. Sums are taken in double across rows and images.
// ATen's own headers, not <torch/extension.h>: a third of the build time (kernels.cpp registers the operators).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lanes.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// Built by metaopt/models/fused.py (torch.utils.cpp_extension.load) on first use; see there.
using at::Tensor;

namespace {

using metaopt::Lanes;
using metaopt::lanes_of;
using metaopt::load;
using metaopt::pick;
using metaopt::store;

// The window functions below run across the channels of one channels-last window (and, for the NCHW forward
// pass, pool_window along a plane of one channel's windows split into four lanes: K 0, the channel's constants).
// Their loops are written without branches so that the compiler vectorises them (the two that select one of four
// values a channel, in Lanes: the compiler left them scalar under AVX2), and they are not inlined: inlined into
// their callers' loops, they did not vectorise.
//
// One pooling window across the channels: the first maximum in scan order of the normalised values (as
// max_pool2d's kernel picks it), ReLU'd, which of the four it was, and its input. The values are compared before the
// normalisation, times the sign of its scale (the same order, exactly): its rounding would make ties of values that
// differ, and route their gradient by the rounding.
template <typename T, int K = 1>
__attribute__((noinline)) void pool_window(const T* __restrict__ x0, const T* __restrict__ x1,
                                           const T* __restrict__ x2, const T* __restrict__ x3,
                                           const T* __restrict__ a, const T* __restrict__ b,
                                           const T* __restrict__ sign, T* __restrict__ out,
                                           uint8_t* __restrict__ which, T* __restrict__ best_x, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T s = sign[K * c], v0 = x0[c], v1 = x1[c], v2 = x2[c], v3 = x3[c];
    const int b1 = v1 * s > v0 * s, b3 = v3 * s > v2 * s;
    const T m01 = b1 ? v1 : v0, m23 = b3 ? v3 : v2;
    const int lower = m23 * s > m01 * s;
    const T chosen = lower ? m23 : m01, best = chosen * a[K * c] + b[K * c];
    best_x[c] = chosen;
    out[c] = best > T(0) ? best : T(0);
    which[c] = static_cast<uint8_t>(lower * (2 + b3) + (1 - lower) * b1);
  }
}

// The pooled gradient through ReLU (gq), and gq times the centred input it came from (the window's maximum, kept by
// the forward pass), summed per channel: the pooled quarter alone.
template <typename T>
__attribute__((noinline)) void sum_window(const T* __restrict__ gy, const T* __restrict__ y,
                                          const T* __restrict__ best_x, const T* __restrict__ mean,
                                          T* __restrict__ sum_g, T* __restrict__ sum_gx, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T gq = y[c] > T(0) ? gy[c] : T(0);
    sum_g[c] += gq;
    sum_gx[c] += gq * (best_x[c] - mean[c]);
  }
}

// The input's gradient over one window: the statistics' terms everywhere, the pooled gradient at the maximum.
template <typename T>
__attribute__((noinline)) void grad_window(const T* __restrict__ x0, const T* __restrict__ x1,
                                           const T* __restrict__ x2, const T* __restrict__ x3,
                                           const T* __restrict__ gy, const T* __restrict__ y,
                                           const uint8_t* __restrict__ which, const T* __restrict__ a,
                                           const T* __restrict__ mean, const T* __restrict__ c1,
                                           const T* __restrict__ c2, T* __restrict__ d0,
                                           T* __restrict__ d1, T* __restrict__ d2, T* __restrict__ d3, int64_t C) {
  using V = typename Lanes<T>::type;
  constexpr int64_t L = Lanes<T>::size;
  const V zero = {};
  int64_t c = 0;
  for (; c + L <= C; c += L) {
    const auto k = lanes_of<T>(which + c);
    const V base = load<V>(c1 + c), slope = load<V>(c2 + c), m = load<V>(mean + c);
    const V gq = pick<T>(load<V>(y + c) > zero, load<V>(a + c) * load<V>(gy + c), zero);
    store(d0 + c, base + slope * (load<V>(x0 + c) - m) + pick<T>(k == 0, gq, zero));
    store(d1 + c, base + slope * (load<V>(x1 + c) - m) + pick<T>(k == 1, gq, zero));
    store(d2 + c, base + slope * (load<V>(x2 + c) - m) + pick<T>(k == 2, gq, zero));
    store(d3 + c, base + slope * (load<V>(x3 + c) - m) + pick<T>(k == 3, gq, zero));
  }
  for (; c < C; ++c) {
    const int32_t k = which[c];
    const T yc = y[c], ga = a[c] * gy[c], base = c1[c], slope = c2[c], m = mean[c];
    const T gq = yc > T(0) ? ga : T(0);
    d0[c] = base + slope * (x0[c] - m) + (k == 0 ? gq : T(0));
    d1[c] = base + slope * (x1[c] - m) + (k == 1 ? gq : T(0));
    d2[c] = base + slope * (x2[c] - m) + (k == 2 ? gq : T(0));
    d3[c] = base + slope * (x3[c] - m) + (k == 3 ? gq : T(0));
  }
}

// The double backward's sums over one window: of the cotangent ax (A1), of ax times the centred input (A2), of gq
// (B), of gq times the centred maximum (G), of gq times the cotangent at the maximum (A0).
template <typename T>
__attribute__((noinline)) void double_sum_window(const T* __restrict__ x0, const T* __restrict__ x1,
                                                 const T* __restrict__ x2, const T* __restrict__ x3,
                                                 const T* __restrict__ a0, const T* __restrict__ a1,
                                                 const T* __restrict__ a2, const T* __restrict__ a3,
                                                 const T* __restrict__ gy, const T* __restrict__ y,
                                                 const uint8_t* __restrict__ which, const T* __restrict__ mean,
                                                 T* __restrict__ s1, T* __restrict__ s2, T* __restrict__ sb,
                                                 T* __restrict__ sg, T* __restrict__ s0, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const int32_t k = which[c];
    const T m = mean[c], v0 = x0[c] - m, v1 = x1[c] - m, v2 = x2[c] - m, v3 = x3[c] - m;
    const T e0 = a0[c], e1 = a1[c], e2 = a2[c], e3 = a3[c];
    // the selects written out: through an inline helper, GCC did not vectorise this loop (7x slower, measured)
    const T xs = k == 0 ? v0 : k == 1 ? v1 : k == 2 ? v2 : v3;
    const T as = k == 0 ? e0 : k == 1 ? e1 : k == 2 ? e2 : e3;
    const T gq = y[c] > T(0) ? gy[c] : T(0);
    s1[c] += (e0 + e1) + (e2 + e3);
    s2[c] += (e0 * v0 + e1 * v1) + (e2 * v2 + e3 * v3);
    sb[c] += gq;
    sg[c] += gq * xs;
    s0[c] += gq * as;
  }
}

// The double backward over one window: the input's gradient (affine in the input and the cotangent, plus the pooled
// term at the maximum) and the pooled gradient's.
template <typename T>
__attribute__((noinline)) void double_grad_window(const T* __restrict__ x0, const T* __restrict__ x1,
                                                  const T* __restrict__ x2, const T* __restrict__ x3,
                                                  const T* __restrict__ a0, const T* __restrict__ a1,
                                                  const T* __restrict__ a2, const T* __restrict__ a3,
                                                  const T* __restrict__ gy, const T* __restrict__ y,
                                                  const uint8_t* __restrict__ which, const T* __restrict__ mean,
                                                  const T* __restrict__ ca,
                                                  const T* __restrict__ cx, const T* __restrict__ c0,
                                                  const T* __restrict__ cg, const T* __restrict__ ea,
                                                  const T* __restrict__ ex, const T* __restrict__ e0,
                                                  T* __restrict__ d0, T* __restrict__ d1, T* __restrict__ d2,
                                                  T* __restrict__ d3, T* __restrict__ ggy, int64_t C) {
  using V = typename Lanes<T>::type;
  constexpr int64_t L = Lanes<T>::size;
  const V zero = {};
  int64_t c = 0;
  for (; c + L <= C; c += L) {
    const auto k = lanes_of<T>(which + c);
    const V m = load<V>(mean + c), v0 = load<V>(x0 + c) - m, v1 = load<V>(x1 + c) - m, v2 = load<V>(x2 + c) - m,
            v3 = load<V>(x3 + c) - m;
    const V w0 = load<V>(a0 + c), w1 = load<V>(a1 + c), w2 = load<V>(a2 + c), w3 = load<V>(a3 + c);
    const auto open = load<V>(y + c) > zero;
    const V gq = pick<T>(open, load<V>(gy + c) * load<V>(cg + c), zero);
    const V xs = pick<T>(k == 0, v0, pick<T>(k == 1, v1, pick<T>(k == 2, v2, v3)));
    const V as = pick<T>(k == 0, w0, pick<T>(k == 1, w1, pick<T>(k == 2, w2, w3)));
    const V fa = load<V>(ca + c), fx = load<V>(cx + c), f0 = load<V>(c0 + c);
    store(d0 + c, fa * w0 + fx * v0 + f0 + pick<T>(k == 0, gq, zero));
    store(d1 + c, fa * w1 + fx * v1 + f0 + pick<T>(k == 1, gq, zero));
    store(d2 + c, fa * w2 + fx * v2 + f0 + pick<T>(k == 2, gq, zero));
    store(d3 + c, fa * w3 + fx * v3 + f0 + pick<T>(k == 3, gq, zero));
    store(ggy + c, pick<T>(open, load<V>(ea + c) * as + load<V>(ex + c) * xs + load<V>(e0 + c), zero));
  }
  for (; c < C; ++c) {
    const int32_t k = which[c];
    const T m = mean[c], v0 = x0[c] - m, v1 = x1[c] - m, v2 = x2[c] - m, v3 = x3[c] - m;
    const T w0 = a0[c], w1 = a1[c], w2 = a2[c], w3 = a3[c];
    const int open = y[c] > T(0);
    const T gq = open ? gy[c] * cg[c] : T(0);
    const T xs = k == 0 ? v0 : k == 1 ? v1 : k == 2 ? v2 : v3;
    const T as = k == 0 ? w0 : k == 1 ? w1 : k == 2 ? w2 : w3;
    d0[c] = ca[c] * w0 + cx[c] * v0 + c0[c] + (k == 0 ? gq : T(0));
    d1[c] = ca[c] * w1 + cx[c] * v1 + c0[c] + (k == 1 ? gq : T(0));
    d2[c] = ca[c] * w2 + cx[c] * v2 + c0[c] + (k == 2 ? gq : T(0));
    d3[c] = ca[c] * w3 + cx[c] * v3 + c0[c] + (k == 3 ? gq : T(0));
    ggy[c] = open ? ea[c] * as + ex[c] * xs + e0[c] : T(0);
  }
}

// Channel c's sums over the images, from per-image partial sums laid out [N][K][C].
template <size_t K>
std::array<double, K> totals(const std::vector<double>& part, int64_t N, int64_t C, int64_t c) {
  std::array<double, K> out{};
  for (int64_t n = 0; n < N; ++n)
    for (size_t j = 0; j < K; ++j) out[j] += part[(n * K + j) * C + c];
  return out;
}

// Positions no pooling window covers (an odd last row or column): calls f(h * W + w) for each.
template <typename F>
void uncovered(int64_t H, int64_t W, F f) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w)
      if (h >= 2 * (H / 2) || w >= 2 * (W / 2)) f(h * W + w);
}

// The two layouts. Channels-last: the window functions run across the channels of each window, reading the map in
// place. NCHW: the forward pass splits a channel's plane into four lanes (element k of every window in lane k, in
// the pooled plane's order) and pools along them; the backward passes run along the plane, then add the pooled terms
// at each window's maximum.
//
// Even and odd elements of r[0, 2n) into even[0, n) and odd[0, n) (a map's rows are short, 28 or 14 values: a plain
// loop over them would run mostly in its scalar remainder).
template <typename T>
inline void deinterleave(const T* __restrict__ r, int64_t n, T* __restrict__ even, T* __restrict__ odd) {
  for (int64_t i = 0; i < n; ++i) {
    even[i] = r[2 * i];
    odd[i] = r[2 * i + 1];
  }
}

#if defined(__AVX512F__)
inline __mmask16 first(int64_t k) { return k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << k) - 1); }

template <>
inline void deinterleave<float>(const float* __restrict__ r, int64_t n, float* __restrict__ even,
                                float* __restrict__ odd) {
  const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t k = std::min<int64_t>(16, n - i);  // outputs in this block; 2k inputs
    const __m512 a = _mm512_maskz_loadu_ps(first(2 * k), r + 2 * i);
    const __m512 b = _mm512_maskz_loadu_ps(first(std::max<int64_t>(0, 2 * k - 16)), r + 2 * i + 16);
    _mm512_mask_storeu_ps(even + i, first(k), _mm512_permutex2var_ps(a, ie, b));
    _mm512_mask_storeu_ps(odd + i, first(k), _mm512_permutex2var_ps(a, io, b));
  }
}
#endif

// An NCHW plane's windows as four lanes of OH * OW.
template <typename T>
void split(const T* __restrict__ plane, int64_t W, int64_t OH, int64_t OW, T* __restrict__ l) {
  const int64_t P = OH * OW;
  for (int64_t oh = 0; oh < OH; ++oh) {
    const T* r0 = plane + 2 * oh * W;
    T* q = l + oh * OW;
    deinterleave(r0, OW, q, q + P);
    deinterleave(r0 + W, OW, q + 2 * P, q + 3 * P);
  }
}

// The sums along an NCHW plane run in 64 bytes of lanes, as SPAN independent vectors of the CPU's width (one under
// AVX-512, two under AVX2), each lane summing every 64 / sizeof(T)-th value in float, the lanes then added in double
// in order: the same sums on every CPU. (Eight lanes in place of sixteen, under AVX2, rounded a glyphs meta-batch's
// statistics so that a ReLU gate of the 16-task meta-batch opened otherwise than in float64: 8e-5 off float64
// instead of 1.3e-6, measured.)
constexpr int64_t SPAN = 64 / metaopt::kNativeBytes;

// NCHW: over a plane's P pooled outputs, the sums of gq and of gq (x at the maximum - m), in double.
template <typename T>
std::array<double, 2> pooled_sums(const T* __restrict__ gy, const T* __restrict__ y, const T* __restrict__ best_x,
                                  T m, int64_t P) {
  using V = typename Lanes<T>::type;
  constexpr int64_t L = Lanes<T>::size;
  const V zero = {}, mv = V{} + m;
  V sg[SPAN] = {}, sx[SPAN] = {};
  int64_t i = 0;
  for (; i + SPAN * L <= P; i += SPAN * L)
    for (int64_t r = 0; r < SPAN; ++r) {
      const V gq = pick<T>(load<V>(y + i + r * L) > zero, load<V>(gy + i + r * L), zero);
      sg[r] += gq;
      sx[r] += gq * (load<V>(best_x + i + r * L) - mv);
    }
  std::array<double, 2> out{};
  for (; i < P; ++i) {
    const T gq = y[i] > T(0) ? gy[i] : T(0);
    out[0] += gq;
    out[1] += gq * (best_x[i] - m);
  }
  for (int64_t r = 0; r < SPAN; ++r)
    for (int64_t j = 0; j < L; ++j) { out[0] += sg[r][j]; out[1] += sx[r][j]; }
  return out;
}

// NCHW: over a plane's n values, the sums of ax and of ax (x - m), in double.
template <typename T>
std::array<double, 2> map_sums(const T* __restrict__ ax, const T* __restrict__ x, T m, int64_t n) {
  using V = typename Lanes<T>::type;
  constexpr int64_t L = Lanes<T>::size;
  const V mv = V{} + m;
  V s1[SPAN] = {}, s2[SPAN] = {};
  int64_t i = 0;
  for (; i + SPAN * L <= n; i += SPAN * L)
    for (int64_t r = 0; r < SPAN; ++r) {
      const V a = load<V>(ax + i + r * L);
      s1[r] += a;
      s2[r] += a * (load<V>(x + i + r * L) - mv);
    }
  std::array<double, 2> out{};
  for (; i < n; ++i) {
    out[0] += ax[i];
    out[1] += ax[i] * (x[i] - m);
  }
  for (int64_t r = 0; r < SPAN; ++r)
    for (int64_t j = 0; j < L; ++j) { out[0] += s1[r][j]; out[1] += s2[r][j]; }
  return out;
}

// NCHW: f(pooled index, the plane offset of its window's maximum) for each of a plane's pooled outputs.
template <typename F>
void each_maximum(const uint8_t* __restrict__ which, int64_t W, int64_t OH, int64_t OW, F f) {
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow) {
      const int64_t o = oh * OW + ow, k = which[o];
      f(o, (2 * oh + (k >> 1)) * W + 2 * ow + (k & 1));
    }
}

// out[o] = g[o] where the ReLU opened (y > 0), else 0: a select in its own contiguous loop, which the compiler
// vectorises; inside the maxima's scatter it became a branch that mispredicted on every other window (half the
// NCHW backward's time on a [25, 64, 28, 28] map). The scatter then multiplies (one fused multiply-add, as before).
template <typename T>
void gated(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ out, int64_t P) {
  for (int64_t o = 0; o < P; ++o) out[o] = y[o] > T(0) ? g[o] : T(0);
}

// Each NCHW plane (n, c), in memory order: f(n, c, plane index n * C + c, scratch of `size` values, one per thread).
template <typename T, typename F>
void each_plane(int64_t N, int64_t C, int64_t size, F f) {
  at::parallel_for(0, N * C, 1, [&](int64_t p0, int64_t p1) {
    std::vector<T> scratch(size);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      f(n, c, p, scratch.data());
    }
  });
}

struct Shape {
  int64_t N, C, H, W, OH, OW;
  bool cl;  // channels-last, else NCHW
  explicit Shape(const Tensor& x)
      : N(x.size(0)), C(x.size(1)), H(x.size(2)), W(x.size(3)), OH(H / 2), OW(W / 2),
        cl(!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {}
  at::MemoryFormat format() const { return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous; }
  double M() const { return double(N * H * W); }
};

void check(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
                  x.dim() == 4 && (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)),
              "fused_block: a dense (NCHW or channels-last) float or double CPU map");
}

template <typename T>
std::vector<Tensor> forward_(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const Shape s(x);
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  const T* px = x.data_ptr<T>();
  const Tensor g = gamma.contiguous(), b = beta.contiguous();
  const T *pg = g.data_ptr<T>(), *pb = b.data_ptr<T>();
  // Per image: the sums and sums of squares of x - pivot (rows summed in T), the pivot being the map's first value
  // in each channel: near the mean, so that the variance does not cancel away (a conv map's mean can be many of its
  // deviations).
  std::vector<double> part(N * 2 * C, 0.0);
  std::vector<T> pivot(C);
  for (int64_t c = 0; c < C; ++c) pivot[c] = s.cl ? px[c] : px[c * H * W];
  const T* __restrict__ pv = pivot.data();
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> rs(C), rq(C);
      for (int64_t n = n0; n < n1; ++n) {
        double *sum = part.data() + n * 2 * C, *sq = sum + C;
        for (int64_t h = 0; h < H; ++h) {
          std::fill(rs.begin(), rs.end(), T(0));
          std::fill(rq.begin(), rq.end(), T(0));
          T* __restrict__ fs = rs.data();
          T* __restrict__ fq = rq.data();
          const T* __restrict__ p = px + (n * H + h) * W * C;
          for (int64_t w = 0; w < W; ++w, p += C)
            for (int64_t c = 0; c < C; ++c) {
              const T v = p[c] - pv[c];
              fs[c] += v;
              fq[c] += v * v;
            }
          for (int64_t c = 0; c < C; ++c) { sum[c] += fs[c]; sq[c] += fq[c]; }
        }
      }
    });
  } else {
    each_plane<T>(N, C, 0, [&](int64_t n, int64_t c, int64_t p, T*) {
      using V = typename Lanes<T>::type;
      constexpr int64_t L = Lanes<T>::size;
      const T* __restrict__ r = px + p * H * W;
      const T pc = pv[c];
      const int64_t HW = H * W;
      V sum[SPAN] = {}, sq[SPAN] = {};
      const V pivot_v = V{} + pc;
      int64_t i = 0;
      for (; i + SPAN * L <= HW; i += SPAN * L)
        for (int64_t k = 0; k < SPAN; ++k) {
          const V v = load<V>(r + i + k * L) - pivot_v;
          sum[k] += v;
          sq[k] += v * v;
        }
      double s1 = 0, s2 = 0;
      for (; i < HW; ++i) {
        const T v = r[i] - pc;
        s1 += v;
        s2 += double(v) * v;
      }
      for (int64_t k = 0; k < SPAN; ++k)
        for (int64_t j = 0; j < L; ++j) { s1 += sum[k][j]; s2 += sq[k][j]; }
      part[n * 2 * C + c] = s1;
      part[n * 2 * C + C + c] = s2;
    });
  }
  const auto opts = x.options();
  Tensor mean = at::empty({C}, opts), invstd = at::empty({C}, opts);
  std::vector<T> a(C), shift(C), sign(C);
  T *pm = mean.data_ptr<T>(), *pi = invstd.data_ptr<T>();
  const double M = s.M();
  for (int64_t c = 0; c < C; ++c) {
    const auto [sum, sq] = totals<2>(part, N, C, c);
    const double d = sum / M, m = double(pivot[c]) + d, var = std::max(sq / M - d * d, 0.0);
    pm[c] = T(m);
    pi[c] = T(1.0 / std::sqrt(var + eps));
    a[c] = pi[c] * pg[c];
    shift[c] = pb[c] - pm[c] * a[c];
    sign[c] = T((a[c] > T(0)) - (a[c] < T(0)));  // 0: every value the same after normalising, the first wins
  }
  Tensor y = at::empty({N, C, OH, OW}, opts.memory_format(s.format()));
  Tensor which = s.cl ? at::empty({N, OH, OW, C}, opts.dtype(at::kByte))
                      : at::empty({N, C, OH, OW}, opts.dtype(at::kByte));
  Tensor best_x = at::empty_like(which, opts);  // the window's maximum input (NCHW's backward reads it)
  T *py = y.data_ptr<T>(), *pb_x = best_x.data_ptr<T>();
  uint8_t* pw = which.data_ptr<uint8_t>();
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const T* x0 = px + ((n * H + 2 * oh) * W + 2 * ow) * C;
            const int64_t o = ((n * OH + oh) * OW + ow) * C;
            pool_window(x0, x0 + C, x0 + W * C, x0 + W * C + C, a.data(), shift.data(), sign.data(), py + o,
                        pw + o, pb_x + o, C);
          }
    });
  } else {
    const int64_t P = OH * OW;
    each_plane<T>(N, C, 4 * P, [&](int64_t, int64_t c, int64_t p, T* l) {
      split(px + p * H * W, W, OH, OW, l);
      pool_window<T, 0>(l, l + P, l + 2 * P, l + 3 * P, a.data() + c, shift.data() + c, sign.data() + c, py + p * P,
                        pw + p * P, pb_x + p * P, P);
    });
  }
  return {y, which, mean, invstd, best_x};
}

template <typename T>
std::vector<Tensor> backward_(const Tensor& gy, const Tensor& x, const Tensor& y, const Tensor& which,
                              const Tensor& best_x, const Tensor& gamma, const Tensor& mean, const Tensor& invstd) {
  const Shape s(x);
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  const T *px = x.data_ptr<T>(), *pgy = gy.data_ptr<T>(), *py = y.data_ptr<T>(), *pb_x = best_x.data_ptr<T>();
  const uint8_t* pw = which.data_ptr<uint8_t>();
  const Tensor g = gamma.contiguous();
  const T *pg = g.data_ptr<T>(), *pm = mean.data_ptr<T>(), *pi = invstd.data_ptr<T>();
  std::vector<double> part(N * 2 * C, 0.0);  // per image: sum of gq, sum of gq (x_max - mean); rows in T
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> rg(C), rx(C);
      for (int64_t n = n0; n < n1; ++n) {
        double *sg = part.data() + n * 2 * C, *sx = sg + C;
        for (int64_t oh = 0; oh < OH; ++oh) {
          std::fill(rg.begin(), rg.end(), T(0));
          std::fill(rx.begin(), rx.end(), T(0));
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t o = ((n * OH + oh) * OW + ow) * C;
            sum_window(pgy + o, py + o, pb_x + o, pm, rg.data(), rx.data(), C);
          }
          for (int64_t c = 0; c < C; ++c) { sg[c] += rg[c]; sx[c] += rx[c]; }
        }
      }
    });
  } else {
    const int64_t P = OH * OW;  // NCHW: the pooled outputs alone (the maximum's input kept by the forward pass)
    each_plane<T>(N, C, 0, [&](int64_t n, int64_t c, int64_t p, T*) {
      const auto [sg, sx] = pooled_sums(pgy + p * P, py + p * P, pb_x + p * P, pm[c], P);
      part[n * 2 * C + c] = sg;
      part[n * 2 * C + C + c] = sx;
    });
  }
  const auto opts = x.options();
  Tensor dgamma = at::empty({C}, opts), dbeta = at::empty({C}, opts);
  T *pdg = dgamma.data_ptr<T>(), *pdb = dbeta.data_ptr<T>();
  std::vector<T> a(C), c1(C), c2(C);
  const double M = s.M();
  for (int64_t c = 0; c < C; ++c) {
    const auto [sg, sx] = totals<2>(part, N, C, c);
    const double ac = double(pg[c]) * pi[c], dg = sx * pi[c];  // dgamma = sum gq * xhat
    pdb[c] = T(sg);
    pdg[c] = T(dg);
    a[c] = T(ac);
    // dx = a (g - dbeta / M - xhat dgamma / M) = c1 + c2 (x - mean) off the maximum
    c2[c] = T(-ac * pi[c] * dg / M);
    c1[c] = T(-ac * sg / M);
  }
  Tensor dx = at::empty_like(x, s.format());
  T* pdx = dx.data_ptr<T>();
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const T* p = px + n * H * W * C;
        T* d = pdx + n * H * W * C;
        uncovered(H, W, [&](int64_t e) {
          for (int64_t c = 0; c < C; ++c) d[e * C + c] = c1[c] + c2[c] * (p[e * C + c] - pm[c]);
        });
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t e = ((2 * oh) * W + 2 * ow) * C, o = ((n * OH + oh) * OW + ow) * C;
            const T* x0 = p + e;
            T* d0 = d + e;
            grad_window(x0, x0 + C, x0 + W * C, x0 + W * C + C, pgy + o, py + o, pw + o, a.data(), pm, c1.data(),
                        c2.data(), d0, d0 + C, d0 + W * C, d0 + W * C + C, C);
          }
      }
    });
  } else {
    const int64_t P = OH * OW;  // NCHW: the statistics' terms over the plane, then the pooled term at each maximum
    each_plane<T>(N, C, P, [&](int64_t, int64_t c, int64_t p, T* __restrict__ gq) {
      const T* __restrict__ plane = px + p * H * W;
      T* __restrict__ d = pdx + p * H * W;
      const T base = c1[c], slope = c2[c], m = pm[c], ac = a[c];
      for (int64_t e = 0; e < H * W; ++e) d[e] = base + slope * (plane[e] - m);
      const T *__restrict__ g = pgy + p * P, *__restrict__ v = py + p * P;
      gated(v, g, gq, P);
      each_maximum(pw + p * P, W, OH, OW, [&](int64_t o, int64_t e) { d[e] += ac * gq[o]; });
    });
  }
  return {dx, dgamma, dbeta};
}

// The cotangents (ax, agamma, abeta) of backward's (dx, dgamma, dbeta) -> those of its inputs (gy, x, gamma); beta
// moves only which element wins and whether ReLU opens, so its derivative is zero. With M elements a channel,
// s = invstd, xhat = (x - mean) s, gq the pooled gradient through ReLU, gz it at each window's maximum (zero
// elsewhere), B = sum gq, G = sum gq xhat_max, A0 = sum gq ax_max, A1 = sum ax, A2 = sum ax xhat,
// P = A0 - A1 B / M - A2 G / M and Q = agamma - gamma s A2 / M:
//   d gamma = s P
//   d gy    = [y > 0] (gamma s (ax_max - A1 / M - A2 xhat_max / M) + agamma xhat_max + abeta)
//   d x     = -gamma s^2 G / M ax + (-gamma s^2 P / M + gamma s^2 G A2 / M^2 - Q s G / M) xhat
//             + gamma s^2 G A1 / M^2 - Q s B / M + Q s gz
template <typename T>
std::vector<Tensor> double_backward_(const Tensor& ax, const Tensor& agamma, const Tensor& abeta, const Tensor& gy,
                                     const Tensor& x, const Tensor& y, const Tensor& which, const Tensor& best_x,
                                     const Tensor& gamma, const Tensor& mean, const Tensor& invstd) {
  const Shape s(x);
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, OH = s.OH, OW = s.OW;
  const T *px = x.data_ptr<T>(), *pa = ax.data_ptr<T>(), *pgy = gy.data_ptr<T>(), *py = y.data_ptr<T>();
  const T* pb_x = best_x.data_ptr<T>();
  const uint8_t* pw = which.data_ptr<uint8_t>();
  const Tensor g = gamma.contiguous(), ag = agamma.contiguous(), ab = abeta.contiguous();
  const T *pg = g.data_ptr<T>(), *pag = ag.data_ptr<T>(), *pab = ab.data_ptr<T>();
  const T *pm = mean.data_ptr<T>(), *pi = invstd.data_ptr<T>();
  constexpr size_t K = 5;  // per image: A1, A2 / s, B, G / s, A0; rows in T
  std::vector<double> part(N * K * C, 0.0);
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<T> rows(K * C);
      for (int64_t n = n0; n < n1; ++n) {
        double* sums = part.data() + n * K * C;
        const T *p = px + n * H * W * C, *q = pa + n * H * W * C;
        uncovered(H, W, [&](int64_t e) {
          for (int64_t c = 0; c < C; ++c) {
            sums[c] += q[e * C + c];
            sums[C + c] += q[e * C + c] * (p[e * C + c] - pm[c]);
          }
        });
        for (int64_t oh = 0; oh < OH; ++oh) {
          std::fill(rows.begin(), rows.end(), T(0));
          T* r = rows.data();
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t e = ((2 * oh) * W + 2 * ow) * C, o = ((n * OH + oh) * OW + ow) * C;
            double_sum_window(p + e, p + e + C, p + e + W * C, p + e + W * C + C, q + e, q + e + C, q + e + W * C,
                              q + e + W * C + C, pgy + o, py + o, pw + o, pm, r, r + C, r + 2 * C, r + 3 * C,
                              r + 4 * C, C);
          }
          for (size_t j = 0; j < K * C; ++j) sums[j] += rows[j];
        }
      }
    });
  } else {
    const int64_t P = OH * OW;  // NCHW: the map's sums along the plane, the pooled ones at each maximum
    each_plane<T>(N, C, P, [&](int64_t n, int64_t c, int64_t p, T* __restrict__ gq) {
      const T *plane = px + p * H * W, *aplane = pa + p * H * W, *g = pgy + p * P, *v = py + p * P;
      const T *b_x = pb_x + p * P, m = pm[c];
      const auto [a1, a2] = map_sums(aplane, plane, m, H * W);
      gated(v, g, gq, P);
      double sb = 0, sg = 0, s0 = 0;
      each_maximum(pw + p * P, W, OH, OW, [&](int64_t o, int64_t e) {
        sb += gq[o];
        sg += gq[o] * (b_x[o] - m);
        s0 += gq[o] * aplane[e];
      });
      double* part_n = part.data() + n * K * C;
      part_n[c] = a1;
      part_n[C + c] = a2;
      part_n[2 * C + c] = sb;
      part_n[3 * C + c] = sg;
      part_n[4 * C + c] = s0;
    });
  }
  const auto opts = x.options();
  Tensor dgamma = at::empty({C}, opts);
  T* pdg = dgamma.data_ptr<T>();
  std::vector<T> ca(C), cx(C), c0(C), cg(C), ea(C), ex(C), e0(C);
  const double M = s.M();
  for (int64_t c = 0; c < C; ++c) {
    const auto t = totals<K>(part, N, C, c);
    const double si = pi[c], gm = pg[c], A1 = t[0], A2 = t[1] * si, B = t[2], G = t[3] * si, A0 = t[4];
    const double P = A0 - A1 * B / M - A2 * G / M, Q = double(pag[c]) - gm * si * A2 / M;
    pdg[c] = T(si * P);
    const double h = -gm * si * si * P / M + gm * si * si * G * A2 / (M * M) - Q * si * G / M;  // the xhat term
    ca[c] = T(-gm * si * si * G / M);  // d x = ca ax + cx (x - mean) + c0 (+ cg gq at the maximum)
    cx[c] = T(h * si);
    c0[c] = T(gm * si * si * G * A1 / (M * M) - Q * si * B / M);
    cg[c] = T(Q * si);
    ea[c] = T(gm * si);  // d gy = [y > 0] (ea ax_max + ex (x_max - mean) + e0)
    ex[c] = T(Q * si);
    e0[c] = T(-gm * si * A1 / M + double(pab[c]));
  }
  Tensor dx = at::empty_like(x, s.format());
  Tensor dgy = at::empty_like(y, s.format());
  T *pdx = dx.data_ptr<T>(), *pdgy = dgy.data_ptr<T>();
  if (s.cl) {
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const T *p = px + n * H * W * C, *q = pa + n * H * W * C;
        T* d = pdx + n * H * W * C;
        uncovered(H, W, [&](int64_t e) {
          for (int64_t c = 0; c < C; ++c)
            d[e * C + c] = ca[c] * q[e * C + c] + cx[c] * (p[e * C + c] - pm[c]) + c0[c];
        });
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t e = ((2 * oh) * W + 2 * ow) * C, o = ((n * OH + oh) * OW + ow) * C;
            double_grad_window(p + e, p + e + C, p + e + W * C, p + e + W * C + C, q + e, q + e + C, q + e + W * C,
                               q + e + W * C + C, pgy + o, py + o, pw + o, pm, ca.data(), cx.data(), c0.data(),
                               cg.data(), ea.data(), ex.data(), e0.data(), d + e, d + e + C, d + e + W * C,
                               d + e + W * C + C, pdgy + o, C);
          }
      }
    });
  } else {
    const int64_t P = OH * OW;  // NCHW: the terms along the plane, then the pooled ones at each maximum
    each_plane<T>(N, C, P, [&](int64_t, int64_t c, int64_t p, T* __restrict__ gq) {
      const T* __restrict__ plane = px + p * H * W;
      const T* __restrict__ aplane = pa + p * H * W;
      T* __restrict__ d = pdx + p * H * W;
      const T m = pm[c], fa = ca[c], fx = cx[c], f0 = c0[c], fg = cg[c], ga = ea[c], gx = ex[c], g0 = e0[c];
      for (int64_t e = 0; e < H * W; ++e) d[e] = fa * aplane[e] + fx * (plane[e] - m) + f0;
      const T *__restrict__ g = pgy + p * P, *__restrict__ v = py + p * P, *__restrict__ b_x = pb_x + p * P;
      T* __restrict__ gg = pdgy + p * P;
      gated(v, g, gq, P);
      each_maximum(pw + p * P, W, OH, OW, [&](int64_t o, int64_t e) {
        d[e] += fg * gq[o];
        gg[o] = ga * aplane[e] + gx * (b_x[o] - m) + g0;
      });
      for (int64_t o = 0; o < P; ++o) gg[o] = v[o] > T(0) ? gg[o] : T(0);  // ReLU closed: nothing, not 0 * it
    });
  }
  return {dgy, dx, dgamma};
}

}  // namespace

namespace metaopt::block {

// (y, which, mean, invstd, best_x): y [N, C, H/2, W/2] in x's layout; which (uint8: which of the window's four is its
// maximum) and best_x (that maximum's input) [N, H/2, W/2, C] channels-last, [N, C, H/2, W/2] NCHW.
std::vector<Tensor> forward(Tensor x, Tensor gamma, Tensor beta, double eps) {
  check(x);
  if (x.scalar_type() == at::kDouble) return forward_<double>(x, gamma, beta, eps);
  return forward_<float>(x, gamma, beta, eps);
}

// (dx, dgamma, dbeta) from the gradient of y and what forward returned.
std::vector<Tensor> backward(Tensor gy, Tensor x, Tensor y, Tensor which, Tensor best_x, Tensor gamma, Tensor mean,
                             Tensor invstd) {
  check(x);
  gy = gy.contiguous(Shape(x).format());
  if (x.scalar_type() == at::kDouble) return backward_<double>(gy, x, y, which, best_x, gamma, mean, invstd);
  return backward_<float>(gy, x, y, which, best_x, gamma, mean, invstd);
}

// (d gy, d x, d gamma) from the cotangents of backward's (dx, dgamma, dbeta), its inputs and what forward returned.
std::vector<Tensor> double_backward(Tensor ax, Tensor agamma, Tensor abeta, Tensor gy, Tensor x, Tensor y,
                                    Tensor which, Tensor best_x, Tensor gamma, Tensor mean, Tensor invstd) {
  check(x);
  ax = ax.contiguous(Shape(x).format());
  gy = gy.contiguous(Shape(x).format());
  if (x.scalar_type() == at::kDouble)
    return double_backward_<double>(ax, agamma, abeta, gy, x, y, which, best_x, gamma, mean, invstd);
  return double_backward_<float>(ax, agamma, abeta, gy, x, y, which, best_x, gamma, mean, invstd);
}

}  // namespace metaopt::block
