// A stride-1 2-D convolution of an input with few channels (a network's first layer: one or three channels, 3x3
// taps), and its weight's and bias's gradient, for the CPU. Such a layer has K = channels x taps products an output
// (9 for glyphs): oneDNN's kernels, blocked for wide inputs, ran it at 5-30 GFLOP/s (NCHW weight gradient 3.7 ms
// for 23 MFLOP on a [25, 1, 28, 28] batch). Here each output row's patches are gathered once (K values a pixel,
// zero outside the image) and multiplied into register tiles: outputs across channels (channels-last) or along the
// row (NCHW), in the CPU's vector width. The weight's gradient is the same products summed over the pixels, in float
// along a row (NCHW: a plane) and in double across rows and images, in a fixed order whatever the threads.
// ATen's own headers, not <torch/extension.h>: a third of the build time (kernels.cpp registers the operators).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <algorithm>
#include <optional>
#include <vector>

#include "lanes.h"

using at::Tensor;

namespace {

using metaopt::Lanes;
using metaopt::load;
using metaopt::store;
using V = Lanes<float>::type;
constexpr int64_t L = Lanes<float>::size;
constexpr int64_t TAPS = 9;  // taps a register tile sums at once (K is padded with zero taps to a multiple of it)

struct Geometry {
  int64_t N, C, H, W, O, KH, KW, PH, PW, OH, OW, K, KP;
  Geometry(const Tensor& x, int64_t o, int64_t kh, int64_t kw, int64_t ph, int64_t pw)
      : N(x.size(0)), C(x.size(1)), H(x.size(2)), W(x.size(3)), O(o), KH(kh), KW(kw), PH(ph), PW(pw),
        OH(H + 2 * ph - kh + 1), OW(W + 2 * pw - kw + 1), K(C * kh * kw), KP((K + TAPS - 1) / TAPS * TAPS) {}
};

// The patches of output row (n, oh) of an NCHW input: value k = (c, i, j) of pixel ow at out[ow * KP + k]
// (pixel-major) or out[k * stride + ow] (tap-major); zero outside the image and in the padding taps (the caller
// zero-fills).
void gather(const float* x, const Geometry& g, int64_t n, int64_t oh, bool pixel_major, int64_t stride, float* out) {
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.KH; ++i) {
      const int64_t h = oh + i - g.PH;
      if (h < 0 || h >= g.H) continue;
      const float* row = x + ((n * g.C + c) * g.H + h) * g.W;
      for (int64_t j = 0; j < g.KW; ++j) {
        const int64_t k = (c * g.KH + i) * g.KW + j;
        const int64_t lo = std::max<int64_t>(0, g.PW - j), hi = std::min<int64_t>(g.OW, g.W + g.PW - j);
        for (int64_t ow = lo; ow < hi; ++ow) {
          const float v = row[ow + j - g.PW];
          if (pixel_major) out[ow * g.KP + k] = v;
          else out[k * stride + ow] = v;
        }
      }
    }
}

// Channels-last output: PX pixels x two vectors of channels a tile, every tap.
constexpr int64_t PX = 4;

void forward_cl(const float* x, const float* wt, const float* bias, const Geometry& g, float* out) {
  const int64_t O = g.O, KP = g.KP;
  at::parallel_for(0, g.N * g.OH, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> patch((g.OW + PX) * KP);
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(patch.begin(), patch.end(), 0.f);
      gather(x, g, r / g.OH, r % g.OH, true, 0, patch.data());
      float* orow = out + r * g.OW * O;
      for (int64_t ow0 = 0; ow0 < g.OW; ow0 += PX) {
        const int64_t np = std::min(PX, g.OW - ow0);
        const float* p = patch.data() + ow0 * KP;
        int64_t o = 0;
        for (; o + 2 * L <= O; o += 2 * L) {
          V acc[PX][2];
          for (int64_t q = 0; q < PX; ++q) { acc[q][0] = load<V>(bias + o); acc[q][1] = load<V>(bias + o + L); }
          for (int64_t k = 0; k < KP; ++k) {
            const V w0 = load<V>(wt + k * O + o), w1 = load<V>(wt + k * O + o + L);
            for (int64_t q = 0; q < PX; ++q) {
              const float a = p[q * KP + k];
              acc[q][0] += a * w0;
              acc[q][1] += a * w1;
            }
          }
          for (int64_t q = 0; q < np; ++q) {
            store(orow + (ow0 + q) * O + o, acc[q][0]);
            store(orow + (ow0 + q) * O + o + L, acc[q][1]);
          }
        }
        for (; o < O; ++o)  // channels past the last pair of vectors
          for (int64_t q = 0; q < np; ++q) {
            float s = bias[o];
            for (int64_t k = 0; k < KP; ++k) s += p[q * KP + k] * wt[k * O + o];
            orow[(ow0 + q) * O + o] = s;
          }
      }
    }
  });
}

// An NCHW image's patches, tap-major over its output plane: out[k * OH * OW + oh * OW + ow] (zero-filled first).
void gather_image(const float* x, const Geometry& g, int64_t n, float* out) {
  const int64_t P = g.OH * g.OW;
  std::fill(out, out + g.KP * P, 0.f);
  for (int64_t oh = 0; oh < g.OH; ++oh) gather(x, g, n, oh, false, P, out + oh * g.OW);
}

// NCHW output: each output plane as one flat row (its rows end to end, as the patches are laid out), two channels x
// four vectors a tile, every tap; the plane's last values (fewer than a vector) one by one.
void forward_nchw(const float* x, const float* wt, const float* bias, const Geometry& g, float* out) {
  const int64_t O = g.O, KP = g.KP, P = g.OH * g.OW, full = P / L * L;
  at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<float> patch(KP * P);
    for (int64_t n = n0; n < n1; ++n) {
      gather_image(x, g, n, patch.data());
      for (int64_t o = 0; o < O; o += 2) {
        const int64_t o1 = std::min(o + 1, O - 1);
        float *out0 = out + (n * O + o) * P, *out1 = out + (n * O + o1) * P;
        int64_t e = 0;
        for (; e + 4 * L <= full; e += 4 * L) {
          V a0[4], a1[4];
          for (int64_t v = 0; v < 4; ++v) { a0[v] = V{} + bias[o]; a1[v] = V{} + bias[o1]; }
          const float* pk = patch.data() + e;
          for (int64_t k = 0; k < KP; ++k, pk += P) {
            const float w0 = wt[k * O + o], w1 = wt[k * O + o1];
            for (int64_t v = 0; v < 4; ++v) {
              const V pv = load<V>(pk + v * L);
              a0[v] += w0 * pv;
              a1[v] += w1 * pv;
            }
          }
          for (int64_t v = 0; v < 4; ++v) store(out1 + e + v * L, a1[v]);  // o1 == o on an odd last channel: o last
          for (int64_t v = 0; v < 4; ++v) store(out0 + e + v * L, a0[v]);
        }
        for (; e + L <= full; e += L) {
          V a0 = V{} + bias[o], a1 = V{} + bias[o1];
          const float* pk = patch.data() + e;
          for (int64_t k = 0; k < KP; ++k, pk += P) {
            const V pv = load<V>(pk);
            a0 += wt[k * O + o] * pv;
            a1 += wt[k * O + o1] * pv;
          }
          store(out1 + e, a1);
          store(out0 + e, a0);
        }
        for (; e < P; ++e) {
          float s0 = bias[o], s1 = bias[o1];
          for (int64_t k = 0; k < KP; ++k) {
            s0 += wt[k * O + o] * patch[k * P + e];
            s1 += wt[k * O + o1] * patch[k * P + e];
          }
          out1[e] = s1;
          out0[e] = s0;
        }
      }
    }
  });
}

// d weight [O][K] and d bias [O] of one image, channels-last gradient: per row, TAPS taps x one vector of channels
// a tile, summed along the row in float, added in double.
void weight_grad_cl(const float* x, const float* gy, const Geometry& g, int64_t n, double* dw, double* db) {
  const int64_t O = g.O, KP = g.KP;
  std::vector<float> patch(g.OW * KP);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    std::fill(patch.begin(), patch.end(), 0.f);
    gather(x, g, n, oh, true, 0, patch.data());
    const float* grow = gy + (n * g.OH + oh) * g.OW * O;
    int64_t o = 0;
    for (; o + L <= O; o += L) {
      V sb = {};
      for (int64_t k0 = 0; k0 < KP; k0 += TAPS) {
        V acc[TAPS] = {};
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const V gv = load<V>(grow + ow * O + o);
          const float* p = patch.data() + ow * KP + k0;
          for (int64_t t = 0; t < TAPS; ++t) acc[t] += p[t] * gv;
          if (k0 == 0) sb += gv;
        }
        for (int64_t t = 0; t < TAPS && k0 + t < g.K; ++t)
          for (int64_t l = 0; l < L; ++l) dw[(o + l) * g.K + k0 + t] += acc[t][l];
      }
      for (int64_t l = 0; l < L; ++l) db[o + l] += sb[l];
    }
    for (; o < O; ++o) {
      float sb = 0;
      for (int64_t ow = 0; ow < g.OW; ++ow) sb += grow[ow * O + o];
      db[o] += sb;
      for (int64_t k = 0; k < g.K; ++k) {
        float s = 0;
        for (int64_t ow = 0; ow < g.OW; ++ow) s += patch[ow * KP + k] * grow[ow * O + o];
        dw[o * g.K + k] += s;
      }
    }
  }
}

// The same, NCHW gradient: per channel, TAPS taps a tile, each a dot product of the output's gradient plane with
// the taps' patches over the plane (flat), in float vectors, added in double.
void weight_grad_nchw(const float* x, const float* gy, const Geometry& g, int64_t n, double* dw, double* db) {
  const int64_t KP = g.KP, P = g.OH * g.OW, full = P / L * L;
  std::vector<float> patch(KP * P);
  gather_image(x, g, n, patch.data());
  for (int64_t o = 0; o < g.O; ++o) {
    const float* plane = gy + (n * g.O + o) * P;
    for (int64_t k0 = 0; k0 < KP; k0 += TAPS) {
      V acc[TAPS] = {}, sb = {};
      const float* pk = patch.data() + k0 * P;
      for (int64_t e = 0; e < full; e += L) {
        const V gv = load<V>(plane + e);
        for (int64_t t = 0; t < TAPS; ++t) acc[t] += gv * load<V>(pk + t * P + e);
        if (k0 == 0) sb += gv;
      }
      for (int64_t t = 0; t < TAPS && k0 + t < g.K; ++t) {
        double s = 0;
        for (int64_t l = 0; l < L; ++l) s += acc[t][l];
        for (int64_t e = full; e < P; ++e) s += plane[e] * pk[t * P + e];
        dw[o * g.K + k0 + t] += s;
      }
      if (k0 == 0) {
        double s = 0;
        for (int64_t l = 0; l < L; ++l) s += sb[l];
        for (int64_t e = full; e < P; ++e) s += plane[e];
        db[o] += s;
      }
    }
  }
}

void check(const Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              "thin_conv: ", what, " must be a 4-D float32 CPU tensor");
}

}  // namespace

namespace metaopt::thin {

// conv2d(x, weight, bias, stride 1, padding (ph, pw)) for x [N, C, H, W] of any layout (gathered from an NCHW copy);
// the output channels-last or NCHW.
Tensor forward(Tensor x, Tensor weight, std::optional<Tensor> bias, int64_t ph, int64_t pw, bool channels_last) {
  check(x, "the input");
  check(weight, "the weight");
  x = x.contiguous();
  const Geometry g(x, weight.size(0), weight.size(2), weight.size(3), ph, pw);
  TORCH_CHECK(weight.size(1) == g.C && g.OH > 0 && g.OW > 0, "thin_conv: shapes do not match");
  // the weight as [KP][O] (taps padded with zeros), the bias as O values
  Tensor wt = at::zeros({g.KP, g.O}, x.options());
  wt.narrow(0, 0, g.K).copy_(weight.reshape({g.O, g.K}).t());
  Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::zeros({g.O}, x.options());
  Tensor out = at::empty({g.N, g.O, g.OH, g.OW},
                            x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                    : at::MemoryFormat::Contiguous));
  if (channels_last) forward_cl(x.data_ptr<float>(), wt.data_ptr<float>(), b.data_ptr<float>(), g, out.data_ptr<float>());
  else forward_nchw(x.data_ptr<float>(), wt.data_ptr<float>(), b.data_ptr<float>(), g, out.data_ptr<float>());
  return out;
}

// (d weight [O, C, kh, kw], d bias [O] or an undefined tensor) from the output's gradient gy (either layout).
std::vector<Tensor> weight_grad(Tensor gy, Tensor x, int64_t kh, int64_t kw, int64_t ph, int64_t pw, bool bias) {
  check(gy, "the output's gradient");
  check(x, "the input");
  x = x.contiguous();
  const Geometry g(x, gy.size(1), kh, kw, ph, pw);
  TORCH_CHECK(gy.size(0) == g.N && gy.size(2) == g.OH && gy.size(3) == g.OW, "thin_conv: shapes do not match");
  const bool cl = gy.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  gy = gy.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  std::vector<double> dw(g.N * g.O * g.K, 0.0), db(g.N * g.O, 0.0);  // per image, summed in order below
  const float *px = x.data_ptr<float>(), *pg = gy.data_ptr<float>();
  at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      if (cl) weight_grad_cl(px, pg, g, n, dw.data() + n * g.O * g.K, db.data() + n * g.O);
      else weight_grad_nchw(px, pg, g, n, dw.data() + n * g.O * g.K, db.data() + n * g.O);
    }
  });
  Tensor dweight = at::empty({g.O, g.C, kh, kw}, x.options());
  float* out = dweight.data_ptr<float>();
  for (int64_t e = 0; e < g.O * g.K; ++e) {
    double s = 0;
    for (int64_t n = 0; n < g.N; ++n) s += dw[n * g.O * g.K + e];
    out[e] = float(s);
  }
  Tensor dbias;
  if (bias) {
    dbias = at::empty({g.O}, x.options());
    for (int64_t o = 0; o < g.O; ++o) {
      double s = 0;
      for (int64_t n = 0; n < g.N; ++n) s += db[n * g.O + o];
      dbias.data_ptr<float>()[o] = float(s);
    }
  }
  return {dweight, dbias};
}

}  // namespace metaopt::thin
