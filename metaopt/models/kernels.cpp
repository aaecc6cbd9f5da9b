// The Python module of metaopt's CPU kernels (built by metaopt/models/fused.py on first use): the fused Conv-4 block
// (fused_block.cpp) and the convolution of a thin input (thin_conv.cpp).
#include <torch/extension.h>

#include <optional>
#include <vector>

using torch::Tensor;

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &metaopt::block::forward, "batch norm (batch statistics), max-pool 2x2, ReLU: forward");
  m.def("backward", &metaopt::block::backward, "batch norm (batch statistics), max-pool 2x2, ReLU: backward");
  m.def("double_backward", &metaopt::block::double_backward,
        "batch norm (batch statistics), max-pool 2x2, ReLU: double backward");
  m.def("thin_conv", &metaopt::thin::forward, "a stride-1 convolution of an input of few channels");
  m.def("thin_conv_weight_grad", &metaopt::thin::weight_grad,
        "the weight's (and bias's) gradient of a stride-1 convolution of an input of few channels");
}
