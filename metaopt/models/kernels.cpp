// The operators of metaopt's CPU kernels (built by metaopt/models/fused.py on first use): the fused Conv-4 block
// (fused_block.cpp) and the convolution of a thin input (thin_conv.cpp).
// Registered as operators of their own namespace (torch.ops.<extension name>), not as a pybind11 module: the
// registration header parses in a third of the time of <torch/extension.h>, the build's longest step.
#include <torch/library.h>

#include <optional>
#include <vector>

using at::Tensor;

namespace metaopt::block {
std::vector<Tensor> forward(Tensor x, Tensor gamma, Tensor beta, double eps);
std::vector<Tensor> backward(Tensor gy, Tensor x, Tensor y, Tensor which, Tensor best_x, Tensor gamma, Tensor mean,
                             Tensor invstd);
std::vector<Tensor> double_backward(Tensor ax, Tensor agamma, Tensor abeta, Tensor gy, Tensor x, Tensor y,
                                    Tensor which, Tensor best_x, Tensor gamma, Tensor mean, Tensor invstd);
}  // namespace metaopt::block

namespace metaopt::thin {
Tensor forward(Tensor x, Tensor weight, std::optional<Tensor> bias, int64_t ph, int64_t pw, bool channels_last);
std::vector<Tensor> weight_grad(Tensor gy, Tensor x, int64_t kh, int64_t kw, int64_t ph, int64_t pw, bool bias);
}  // namespace metaopt::thin

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m) {
  // batch norm (batch statistics), max-pool 2x2, ReLU: forward, backward, double backward
  m.def("forward", &metaopt::block::forward);
  m.def("backward", &metaopt::block::backward);
  m.def("double_backward", &metaopt::block::double_backward);
  // a stride-1 convolution of an input of few channels, and its weight's (and bias's) gradient
  m.def("thin_conv", &metaopt::thin::forward);
  m.def("thin_conv_weight_grad", &metaopt::thin::weight_grad);
}
