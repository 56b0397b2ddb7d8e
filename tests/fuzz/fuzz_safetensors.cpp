// libFuzzer target: SafetensorsFile::parse on arbitrary bytes, then every accessor on every
// tensor of an accepted file (tests/fuzz/README.md). Seeds: the shipped models' weights.
#include <vector>

#include "fuzz_common.hpp"
#include "vkrnn/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace vkrnn;
  return fuzz::run([&] {
    std::vector<std::byte> bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = std::byte(data[i]);
    const SafetensorsFile file = SafetensorsFile::parse(std::move(bytes), "fuzz.safetensors");
    for (const auto& name : file.names()) {
      const SafetensorsEntry& e = file.entry(name);
      std::size_t count = 1;
      for (auto d : e.shape) count *= d;
      if (e.offset > size || e.bytes > size - e.offset || e.bytes != count * dtype_size(e.dtype)) {
        fuzz::invariant_failed("an accepted entry lies outside the file or disagrees with its shape");
      }
      if (file.raw(name).size() != e.bytes) fuzz::invariant_failed("raw() size");
      try {
        const bool floating = e.dtype == StDType::F32 || e.dtype == StDType::F16 || e.dtype == StDType::BF16 ||
                              e.dtype == StDType::F64;
        const std::size_t n = floating ? file.to_f32(name).size() : file.to_i64(name).size();
        if (n != count) fuzz::invariant_failed("element count");
      } catch (const Error& err) {
        // The only refusal of a tensor the header accepted: a BOOL byte other than 0 or 1.
        if (err.code() != ErrorCode::format || e.dtype != StDType::BOOL) fuzz::invariant_failed(err.what());
      }
    }
    (void)file.metadata();
  });
}
