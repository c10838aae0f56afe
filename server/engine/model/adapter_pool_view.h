// What the model's forward needs to know of the adapter pool: the device-resident tensors, indexed by
// slot. The pool itself (server/engine/adapters) owns them and decides which adapter lives in which slot.
#pragma once

#include <ATen/ATen.h>

#include "kernels/ssm_kernels.h"

namespace statetune::engine {

struct AdapterPoolView {
  at::Tensor state_offset;   // [S, n_layer, D, N] fp32, or undefined when no slot uses it
  at::Tensor output_offset;  // [S, n_layer, D] fp32, or undefined
  at::Tensor initial_state;  // [S, n_layer, D, N] fp32, or undefined

  // The per-layer views the kernels take; `slots` is [B] int32 on the model's device.
  kernels::LayerAdapters layer(int64_t i, const at::Tensor& slots) const {
    kernels::LayerAdapters out;
    out.slots = slots;
    if (state_offset.defined()) out.state_offset = state_offset.select(1, i);
    if (output_offset.defined()) out.output_offset = output_offset.select(1, i);
    if (initial_state.defined()) out.initial_state = initial_state.select(1, i);
    return out;
  }
};

}  // namespace statetune::engine
