// Batch norm with the batch's statistics, then 2x2 max-pool (stride 2, floor), then ReLU, on a channels-last float
// map, fused for the CPU: the forward pass reads the map twice (statistics, pooling) and writes only the pooled
// quarter; the backward pass reads it once more and writes its gradient once. The loops over channels are written
// without branches so that the compiler vectorises them.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

// Built by metaopt/models/fused.py (torch.utils.cpp_extension.load) on first use; see there.
using torch::Tensor;

namespace {

// One pooling window across the channels: the first maximum in scan order of the normalised values (as
// max_pool2d's kernel picks it), ReLU'd, and which of the four it was.
__attribute__((noinline)) void pool_window(const float* __restrict__ x0, const float* __restrict__ x1,
                                           const float* __restrict__ x2, const float* __restrict__ x3,
                                           const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ out, uint8_t* __restrict__ which, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const float z0 = x0[c] * a[c] + b[c], z1 = x1[c] * a[c] + b[c];
    const float z2 = x2[c] * a[c] + b[c], z3 = x3[c] * a[c] + b[c];
    const int b1 = z1 > z0, b3 = z3 > z2;
    const float m01 = b1 ? z1 : z0, m23 = b3 ? z3 : z2;
    const int lower = m23 > m01;
    const float best = lower ? m23 : m01;
    out[c] = best > 0.f ? best : 0.f;
    which[c] = static_cast<uint8_t>(lower * (2 + b3) + (1 - lower) * b1);
  }
}

// The pooled gradient through ReLU (gq), and gq times the centred input it came from, summed per channel.
// noinline: each window's loop vectorises on its own (inlined into the callers' loops it did not).
__attribute__((noinline)) void sum_window(const float* __restrict__ x0, const float* __restrict__ x1,
                                          const float* __restrict__ x2, const float* __restrict__ x3,
                                          const float* __restrict__ gy, const float* __restrict__ y,
                                          const uint8_t* __restrict__ which, const float* __restrict__ mean,
                                          float* __restrict__ sum_g, float* __restrict__ sum_gx, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {  // every load unconditional, so that the selects vectorise
    const int32_t k = which[c];
    const float v0 = x0[c], v1 = x1[c], v2 = x2[c], v3 = x3[c], yc = y[c], gc = gy[c];
    const float xs = k == 0 ? v0 : k == 1 ? v1 : k == 2 ? v2 : v3;
    const float gq = yc > 0.f ? gc : 0.f;
    sum_g[c] += gq;
    sum_gx[c] += gq * (xs - mean[c]);
  }
}

// The input's gradient over one window: the statistics' terms everywhere, the pooled gradient at the maximum.
__attribute__((noinline)) void grad_window(const float* __restrict__ x0, const float* __restrict__ x1,
                                           const float* __restrict__ x2, const float* __restrict__ x3,
                                           const float* __restrict__ gy, const float* __restrict__ y,
                                           const uint8_t* __restrict__ which, const float* __restrict__ a,
                                           const float* __restrict__ c1, const float* __restrict__ c2,
                                           float* __restrict__ d0, float* __restrict__ d1, float* __restrict__ d2,
                                           float* __restrict__ d3, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const int32_t k = which[c];
    const float yc = y[c], ga = a[c] * gy[c], base = c1[c], slope = c2[c];
    const float gq = yc > 0.f ? ga : 0.f;
    d0[c] = base + slope * x0[c] + (k == 0 ? gq : 0.f);
    d1[c] = base + slope * x1[c] + (k == 1 ? gq : 0.f);
    d2[c] = base + slope * x2[c] + (k == 2 ? gq : 0.f);
    d3[c] = base + slope * x3[c] + (k == 3 ? gq : 0.f);
  }
}

// Channel c's two sums over the images, from per-image partial sums laid out [N][2][C].
std::pair<double, double> totals(const std::vector<double>& part, int64_t N, int64_t C, int64_t c) {
  double first = 0, second = 0;
  for (int64_t n = 0; n < N; ++n) {
    first += part[n * 2 * C + c];
    second += part[n * 2 * C + C + c];
  }
  return {first, second};
}

void check(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 &&
              x.is_contiguous(at::MemoryFormat::ChannelsLast), "fused_block: a channels-last float CPU map");
}

}  // namespace

// (y, which, mean, invstd): y [N, C, H/2, W/2] channels-last; which [N, H/2, W/2, C] uint8, the window's maximum.
std::vector<Tensor> forward(Tensor x, Tensor gamma, Tensor beta, double eps) {
  check(x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OH = H / 2, OW = W / 2;
  const float* px = x.data_ptr<float>();
  const Tensor g = gamma.contiguous(), b = beta.contiguous();
  const float *pg = g.data_ptr<float>(), *pb = b.data_ptr<float>();
  std::vector<double> part(N * 2 * C, 0.0);  // per image: the sums and sums of squares, rows summed in float
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> rs(C), rq(C);
    for (int64_t n = n0; n < n1; ++n) {
      double *s = part.data() + n * 2 * C, *q = s + C;
      for (int64_t h = 0; h < H; ++h) {
        std::fill(rs.begin(), rs.end(), 0.f);
        std::fill(rq.begin(), rq.end(), 0.f);
        float* __restrict__ fs = rs.data();
        float* __restrict__ fq = rq.data();
        const float* __restrict__ p = px + (n * H + h) * W * C;
        for (int64_t w = 0; w < W; ++w, p += C)
          for (int64_t c = 0; c < C; ++c) { fs[c] += p[c]; fq[c] += p[c] * p[c]; }
        for (int64_t c = 0; c < C; ++c) { s[c] += fs[c]; q[c] += fq[c]; }
      }
    }
  });
  const auto opts = x.options();
  Tensor mean = torch::empty({C}, opts), invstd = torch::empty({C}, opts);
  std::vector<float> a(C), shift(C);
  float *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
  const double M = double(N * H * W);
  for (int64_t c = 0; c < C; ++c) {
    const auto [s, q] = totals(part, N, C, c);
    const double m = s / M, var = std::max(q / M - m * m, 0.0);
    pm[c] = float(m);
    pi[c] = float(1.0 / std::sqrt(var + eps));
    a[c] = pi[c] * pg[c];
    shift[c] = pb[c] - pm[c] * a[c];
  }
  Tensor y = torch::empty({N, C, OH, OW}, opts.memory_format(at::MemoryFormat::ChannelsLast));
  Tensor which = torch::empty({N, OH, OW, C}, opts.dtype(torch::kUInt8));
  float* py = y.data_ptr<float>();
  uint8_t* pw = which.data_ptr<uint8_t>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const float* x0 = px + ((n * H + 2 * oh) * W + 2 * ow) * C;
          const int64_t o = ((n * OH + oh) * OW + ow) * C;
          pool_window(x0, x0 + C, x0 + W * C, x0 + W * C + C, a.data(), shift.data(), py + o, pw + o, C);
        }
  });
  return {y, which, mean, invstd};
}

// (dx, dgamma, dbeta) from the gradient of y and what forward returned.
std::vector<Tensor> backward(Tensor gy, Tensor x, Tensor y, Tensor which, Tensor gamma, Tensor mean, Tensor invstd) {
  check(x);
  gy = gy.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OH = H / 2, OW = W / 2;
  const float *px = x.data_ptr<float>(), *pgy = gy.data_ptr<float>(), *py = y.data_ptr<float>();
  const uint8_t* pw = which.data_ptr<uint8_t>();
  const Tensor g = gamma.contiguous();
  const float *pg = g.data_ptr<float>(), *pm = mean.data_ptr<float>(), *pi = invstd.data_ptr<float>();
  std::vector<double> part(N * 2 * C, 0.0);  // per image: sum of gq, sum of gq (x - mean); rows in float
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> rg(C), rx(C);
    for (int64_t n = n0; n < n1; ++n) {
      double *sg = part.data() + n * 2 * C, *sx = sg + C;
      for (int64_t oh = 0; oh < OH; ++oh) {
        std::fill(rg.begin(), rg.end(), 0.f);
        std::fill(rx.begin(), rx.end(), 0.f);
        for (int64_t ow = 0; ow < OW; ++ow) {
          const float* x0 = px + ((n * H + 2 * oh) * W + 2 * ow) * C;
          const int64_t o = ((n * OH + oh) * OW + ow) * C;
          sum_window(x0, x0 + C, x0 + W * C, x0 + W * C + C, pgy + o, py + o, pw + o, pm, rg.data(), rx.data(), C);
        }
        for (int64_t c = 0; c < C; ++c) { sg[c] += rg[c]; sx[c] += rx[c]; }
      }
    }
  });
  const auto opts = x.options();
  Tensor dgamma = torch::empty({C}, opts), dbeta = torch::empty({C}, opts);
  float *pdg = dgamma.data_ptr<float>(), *pdb = dbeta.data_ptr<float>();
  std::vector<float> a(C), c1(C), c2(C);
  const double M = double(N * H * W);
  for (int64_t c = 0; c < C; ++c) {
    const auto [sg, sx] = totals(part, N, C, c);
    const double ac = double(pg[c]) * pi[c], dg = sx * pi[c];  // dgamma = sum gq * xhat
    pdb[c] = float(sg);
    pdg[c] = float(dg);
    a[c] = float(ac);
    const double k2 = -ac * pi[c] * dg / M;  // dx = a (g - dbeta / M - xhat dgamma / M): its terms in x
    c2[c] = float(k2);
    c1[c] = float(-ac * sg / M - k2 * pm[c]);
  }
  Tensor dx = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
  float* pdx = dx.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* p = px + n * H * W * C;
      float* d = pdx + n * H * W * C;
      for (int64_t h = 0; h < H; ++h)  // rows and columns no window covers (odd sizes): the statistics' terms
        for (int64_t w = 0; w < W; ++w)
          if (h >= 2 * OH || w >= 2 * OW)
            for (int64_t c = 0; c < C; ++c) d[(h * W + w) * C + c] = c1[c] + c2[c] * p[(h * W + w) * C + c];
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int64_t e = ((2 * oh) * W + 2 * ow) * C, o = ((n * OH + oh) * OW + ow) * C;
          const float* x0 = p + e;
          float* d0 = d + e;
          grad_window(x0, x0 + C, x0 + W * C, x0 + W * C + C, pgy + o, py + o, pw + o, a.data(), c1.data(),
                      c2.data(), d0, d0 + C, d0 + W * C, d0 + W * C + C, C);
        }
    }
  });
  return {dx, dgamma, dbeta};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "batch norm (batch statistics), max-pool 2x2, ReLU: forward");
  m.def("backward", &backward, "batch norm (batch statistics), max-pool 2x2, ReLU: backward");
}
