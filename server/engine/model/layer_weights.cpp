#include "server/engine/model/layer_weights.h"

namespace statetune::engine {

LayerWeights split_layer_weights(const MambaConfig& c, int64_t layer, const LayerWeightFetch& fetch) {
  const int64_t M = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  constexpr WeightPrecision compute = WeightPrecision::kCompute, fp32 = WeightPrecision::kFp32;
  const std::string p = "backbone.layers." + std::to_string(layer) + ".";
  LayerWeights l;
  l.norm = fetch(p + "norm.weight", {M}, fp32);
  l.in_proj = fetch(p + "mixer.in_proj.weight", {2 * D, M}, compute);
  l.in_x = l.in_proj.narrow(0, 0, D);
  l.in_z = l.in_proj.narrow(0, D, D);
  if (c.proj_bias) {
    l.in_proj_b = fetch(p + "mixer.in_proj.bias", {2 * D}, compute);
    l.in_x_b = l.in_proj_b.narrow(0, 0, D);
    l.in_z_b = l.in_proj_b.narrow(0, D, D);
  }
  // The kernels read conv_w and A as dense rows.
  l.conv_w = fetch(p + "mixer.conv1d.weight", {D, 1, K}, fp32).reshape({D, K}).contiguous();
  if (c.conv_bias) l.conv_b = fetch(p + "mixer.conv1d.bias", {D}, fp32);
  l.x_proj = fetch(p + "mixer.x_proj.weight", {R + 2 * N, D}, compute);
  l.x_dt = l.x_proj.narrow(0, 0, R);
  l.x_B = l.x_proj.narrow(0, R, N);
  l.x_C = l.x_proj.narrow(0, R + N, N);
  l.dt_w = fetch(p + "mixer.dt_proj.weight", {D, R}, compute);
  l.dt_b = fetch(p + "mixer.dt_proj.bias", {D}, fp32);
  l.A = fetch(p + "mixer.A_log", {D, N}, fp32).exp().neg().contiguous();
  l.Dskip = fetch(p + "mixer.D", {D}, fp32);
  l.out_w = fetch(p + "mixer.out_proj.weight", {M, D}, compute);
  if (c.proj_bias) l.out_b = fetch(p + "mixer.out_proj.bias", {M}, compute);
  return l;
}

}  // namespace statetune::engine
