#pragma once
// Per-op precision and tuning flags (ncnn style): carried by each op, never global.
#include <cstdint>

#include "vkrnn/export.h"

namespace vkrnn {

// How dense layers (Linear, a model's output projections) and recurrent layers (Rnn's weight
// matrices) store their weights; arithmetic and accumulation stay fp32 in every case.
enum class WeightStorage : std::uint8_t {
  automatic,  // f16 when fp16_storage is set, else f32 (a model file's I8 weights stay i8)
  f32,
  f16,  // needs storageBuffer16BitAccess, like fp16_storage
  i8,   // int8 with a per-output-row f32 scale (symmetric: scale = max|w_row| / 127, w ~ q *
        // scale), packed four per 32-bit word: any Vulkan 1.1 device, no 8-bit storage feature
};
VKRNN_API const char* to_string(WeightStorage storage) noexcept;

struct OpOptions {
  // Store keys, values and weights as float16 (fp32 arithmetic). Needs storageBuffer16BitAccess;
  // ops throw Error(missing_feature) when the device or the adopted VkDevice lacks it.
  bool fp16_storage = false;
  // Weight matrices of dense and recurrent layers. Anything but automatic takes precedence over
  // fp16_storage for them (fp16_storage still governs keys and values). Models: i8 quantizes an
  // f32/f16 file's dense and recurrent weights at load (per-row scales); f32/f16 dequantize an
  // I8 file's. A model's recurrent layers ignore fp16_storage (f32 unless weight_storage asks).
  WeightStorage weight_storage = WeightStorage::automatic;
  // Use the shared-memory tree for reductions even where subgroup arithmetic exists (tests use
  // this to cover the path taken by devices without subgroup support).
  bool force_shared_memory_reduction = false;
  // 0 = chosen from the device's limits. Otherwise the op uses these (clamped to the limits).
  std::uint32_t workgroup_size = 0;
  std::uint32_t tile = 0;
  // Layers that own their weight matrices (Linear, Rnn's W_hh and W_ih) store them in the layout
  // their kernels read fastest on the device: on CPU drivers, blocks of rows interleaved 16 bytes
  // at a time (Linear::weight()). false keeps PyTorch's row-major [out, in] everywhere, which
  // every GEMM path reads (Gemm::set_path on a packed layer other than the per-invocation GEMV is
  // an error).
  bool pack_weights = true;
};

}  // namespace vkrnn
