#pragma once
// Strict reader and writer for the safetensors format (the weights format PyTorch tooling writes):
//   u64 little-endian N | N bytes of UTF-8 JSON header | data buffer
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data buffer) and may hold "__metadata__": {string: string}.
//
// Everything is validated when the file is opened, so a SafetensorsFile that exists is sound:
// every tensor's bytes lie inside the buffer, match its dtype and shape exactly, and no two
// tensors overlap. As in the format's specification the tensors must tile the data buffer with
// no gaps or trailing bytes (this rules out polyglot files). Any violation throws
// Error(ErrorCode::format) naming the file, the tensor and what was expected vs found.
//
// The files are untrusted (SECURITY.md): a file that is not a regular file is refused without
// blocking, nothing is read or allocated beyond the limits below, and no exception other than
// vkrnn::Error leaves the reader (an allocation failure is Error(out_of_range)).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vkrnn/export.h"

namespace vkrnn {

// The reader's limits. A header longer than max_header_bytes or naming more than max_tensors
// tensors is Error(format) before its tensors are looked at; one read (raw / to_f32 / to_i64)
// of more than max_read_bytes is Error(out_of_range) before anything is allocated: 4 GiB is
// beyond what any Vulkan device can bind as one buffer (maxStorageBufferRange is 32-bit).
namespace safetensors_limits {
inline constexpr std::uint64_t max_header_bytes = 100ull << 20;  // the reference implementation's bound
inline constexpr std::size_t max_tensors = 65536;
inline constexpr std::uint64_t max_read_bytes = 4ull << 30;
}  // namespace safetensors_limits

enum class StDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
// The header's spelling: "F64", "F32", ..., "BOOL".
VKRNN_API const char* to_string(StDType dtype) noexcept;
VKRNN_API std::size_t dtype_size(StDType dtype) noexcept;

struct SafetensorsEntry {
  std::string name;
  StDType dtype;
  std::vector<std::size_t> shape;
  std::size_t offset;  // of the first byte, relative to the start of the file
  std::size_t bytes;   // element count * dtype_size(dtype)
};

class VKRNN_API SafetensorsFile {
 public:
  // Reads and checks the header; each tensor is read from the file when asked for (streamed
  // with pread, never mapped: a file truncated by someone else while mapped would crash the
  // reader with SIGBUS; a file that shrank is Error(io) naming it). The file stays open while
  // a copy of the SafetensorsFile lives. Missing, unreadable or not a regular file (a FIFO, a
  // device, a directory): Error(io) with the path and the reason.
  static SafetensorsFile open(const std::string& path);
  // Parses bytes already in memory; origin names the source in error messages.
  static SafetensorsFile parse(std::vector<std::byte> bytes, std::string origin);

  const std::string& origin() const;
  std::vector<std::string> names() const;  // sorted
  std::size_t size() const;                // number of tensors
  bool contains(const std::string& name) const;
  // Error(not_found) naming the file, the tensor and some of the names it does have.
  const SafetensorsEntry& entry(const std::string& name) const;
  // The tensor's bytes as stored (little-endian).
  std::vector<std::byte> raw(const std::string& name) const;

  // F32/F16/BF16/F64 converted to float (F64 rounds to nearest; out of range becomes inf).
  // Integer and BOOL dtypes: Error(invalid_argument).
  std::vector<float> to_f32(const std::string& name) const;
  // As above, and the shape must be expected_shape, else Error(invalid_argument) naming the
  // file, the tensor, the expected and the actual shape.
  std::vector<float> to_f32(const std::string& name,
                            const std::vector<std::size_t>& expected_shape) const;
  // I64/I32/I16/I8/U8/BOOL widened. Float dtypes: Error(invalid_argument). A BOOL byte other
  // than 0 or 1: Error(format).
  std::vector<std::int64_t> to_i64(const std::string& name) const;

  // "__metadata__" (empty if absent).
  const std::map<std::string, std::string>& metadata() const;

 private:
  struct Data;
  explicit SafetensorsFile(std::shared_ptr<const Data> data);
  static SafetensorsFile from_header(std::shared_ptr<Data> data, std::string_view header, std::uint64_t file_size);
  std::shared_ptr<const Data> data_;  // immutable, so copies share it
};

struct SafetensorsTensorData {
  std::string name;
  StDType dtype;
  std::vector<std::size_t> shape;
  std::vector<std::byte> data;  // little-endian, element count * dtype_size(dtype) bytes
};

// Writes tensors (in the given order) and metadata; the header is padded with spaces so the
// data buffer starts 8-byte aligned, as the reference implementation does. Validates names
// (non-empty, unique, not "__metadata__") and byte counts (Error(invalid_argument)) before
// touching the file; filesystem failures are Error(io) with the path and strerror. The file is
// written to a temporary name in the same directory and renamed into place.
VKRNN_API void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorData>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});
// The header and data of such a file, in memory (what write_safetensors writes).
VKRNN_API std::vector<std::byte> serialize_safetensors(const std::vector<SafetensorsTensorData>& tensors,
                                                       const std::map<std::string, std::string>& metadata = {});

// Builders. values.size() must equal the shape's element count (else Error(invalid_argument)).
VKRNN_API SafetensorsTensorData f32_tensor(std::string name, std::vector<std::size_t> shape,
                                           std::span<const float> values);
// Rounds to nearest even.
VKRNN_API SafetensorsTensorData f16_tensor(std::string name, std::vector<std::size_t> shape,
                                           std::span<const float> values);
VKRNN_API SafetensorsTensorData bf16_tensor(std::string name, std::vector<std::size_t> shape,
                                            std::span<const float> values);
VKRNN_API SafetensorsTensorData i64_tensor(std::string name, std::vector<std::size_t> shape,
                                           std::span<const std::int64_t> values);
VKRNN_API SafetensorsTensorData i32_tensor(std::string name, std::vector<std::size_t> shape,
                                           std::span<const std::int32_t> values);

}  // namespace vkrnn
