// The safetensors reader/writer (src/io/safetensors.cpp), the Python tool module
// (tools/safetensors_io.py) against it, and the half/bfloat16 conversions in vkrnn/half.hpp.
#include <algorithm>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/safetensors.hpp"

namespace fs = std::filesystem;
using vkrnn::Error;
using vkrnn::ErrorCode;
using vkrnn::SafetensorsFile;
using vkrnn::SafetensorsTensorData;
using vkrnn::StDType;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<std::byte> to_bytes(std::string_view s) {
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// A file from a literal header and a data buffer of data_bytes bytes (a recognisable pattern).
// header_len_override replaces the length field.
std::vector<std::byte> make_file(std::string_view header, std::size_t data_bytes,
                                 std::optional<std::uint64_t> header_len_override = std::nullopt) {
  const std::uint64_t header_len = header_len_override.value_or(header.size());
  std::vector<std::byte> out(8);
  for (int i = 0; i < 8; ++i) out[i] = std::byte((header_len >> (8 * i)) & 0xff);
  auto h = to_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(std::byte(i * 7 + 1));
  return out;
}

template <class T>
std::vector<std::byte> le_bytes(const std::vector<T>& values) {
  std::vector<std::byte> out(values.size() * sizeof(T));
  for (std::size_t i = 0; i < values.size(); ++i) {
    using U = std::make_unsigned_t<
        std::conditional_t<std::is_floating_point_v<T>,
                           std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>, T>>;
    const U v = std::bit_cast<U>(values[i]);
    for (std::size_t b = 0; b < sizeof(T); ++b) out[i * sizeof(T) + b] = std::byte((v >> (8 * b)) & 0xff);
  }
  return out;
}

// The call must throw vkrnn::Error with this code and a message containing every needle.
::testing::AssertionResult throws_error(const std::function<void()>& fn, ErrorCode code,
                                        const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (e.code() != code) {
      return ::testing::AssertionFailure() << "code " << vkrnn::to_string(e.code()) << ", expected "
                                           << vkrnn::to_string(code) << "; message: " << msg;
    }
    for (const auto& n : needles) {
      if (msg.find(n) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << n << "\": " << msg;
      }
    }
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-vkrnn exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// parse(file) must fail with ErrorCode::format naming the origin and the needles.
::testing::AssertionResult rejects(std::string_view header, std::size_t data_bytes,
                                   const std::vector<std::string>& needles,
                                   std::optional<std::uint64_t> header_len = std::nullopt) {
  const std::string origin = "mem://malformed-case";
  std::vector<std::string> all = needles;
  all.push_back(origin);
  return throws_error(
      [&] { SafetensorsFile::parse(make_file(header, data_bytes, header_len), origin); },
      ErrorCode::format, all);
}

// A scratch directory for this test process, removed at exit.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("vkrnn-st-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(Safetensors, RoundTripAllDTypes) {
  TempDir dir;
  const std::vector<float> f32 = {-1.5f, 0.0f, 1.0f / 3.0f, 3.0e38f, 1e-45f, -0.0f};
  const std::vector<double> f64 = {1.0 / 3.0, 1e300, -2.0, 5e-324};
  const std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(),
                                         std::numeric_limits<std::int64_t>::max(), 0, -1};
  const std::vector<std::int32_t> i32 = {std::numeric_limits<std::int32_t>::min(),
                                         std::numeric_limits<std::int32_t>::max(), 7};
  const std::vector<std::int16_t> i16 = {-32768, 32767, -1};
  const std::vector<std::int8_t> i8 = {-128, 127, -1};
  const std::vector<std::uint8_t> u8 = {0, 1, 128, 255};
  const std::vector<std::uint8_t> boolean = {1, 0, 0, 1};

  std::vector<SafetensorsTensorData> tensors;
  tensors.push_back(vkrnn::f32_tensor("layer.0.weight", {2, 3}, f32));
  tensors.push_back({"f64", StDType::F64, {2, 2}, le_bytes(f64)});
  tensors.push_back(vkrnn::f16_tensor("f16", {3}, std::vector<float>{1.0f, -0.5f, 65504.0f}));
  tensors.push_back(vkrnn::bf16_tensor("bf16", {1, 2}, std::vector<float>{1.0f, -3.0f}));
  tensors.push_back(vkrnn::i64_tensor("i64", {4}, i64));
  tensors.push_back(vkrnn::i32_tensor("i32", {3, 1}, i32));
  tensors.push_back({"i16", StDType::I16, {3}, le_bytes(i16)});
  tensors.push_back({"i8", StDType::I8, {3}, le_bytes(i8)});
  tensors.push_back({"u8", StDType::U8, {2, 2}, le_bytes(u8)});
  tensors.push_back({"bool", StDType::BOOL, {4}, le_bytes(boolean)});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\xc3\xa9llo"}};
  const std::string path = dir.file("all.safetensors");
  vkrnn::write_safetensors(path, tensors, meta);

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.origin(), path);
  EXPECT_EQ(file.metadata(), meta);
  EXPECT_EQ(file.size(), tensors.size());
  std::vector<std::string> expected_names;
  for (const auto& t : tensors) expected_names.push_back(t.name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(file.names(), expected_names);
  const auto file_bytes = fs::file_size(path);
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(file.contains(t.name));
    const auto& e = file.entry(t.name);
    EXPECT_EQ(e.name, t.name);
    EXPECT_EQ(e.dtype, t.dtype);
    EXPECT_EQ(e.shape, t.shape);
    EXPECT_EQ(e.bytes, t.data.size());
    EXPECT_LE(e.offset + e.bytes, file_bytes);
    const auto raw = file.raw(t.name);
    EXPECT_TRUE(std::equal(raw.begin(), raw.end(), t.data.begin(), t.data.end()));
  }
  // The data buffer starts 8-byte aligned, like the reference writer's.
  EXPECT_EQ((file.entry("layer.0.weight").offset) % 8, 0u) << "first tensor in file order";

  const auto got_f32 = file.to_f32("layer.0.weight");
  ASSERT_EQ(got_f32.size(), f32.size());
  for (std::size_t i = 0; i < f32.size(); ++i) EXPECT_TRUE(same_bits(got_f32[i], f32[i])) << i;
  EXPECT_EQ(file.to_f32("layer.0.weight", {2, 3}), got_f32);

  const auto got_f64 = file.to_f32("f64");
  ASSERT_EQ(got_f64.size(), 4u);
  EXPECT_EQ(got_f64[0], 1.0f / 3.0f);
  EXPECT_EQ(got_f64[1], kInf);  // out of float range
  EXPECT_EQ(got_f64[2], -2.0f);
  EXPECT_EQ(got_f64[3], 0.0f);  // below float's subnormals

  EXPECT_EQ(file.to_f32("f16"), (std::vector<float>{1.0f, -0.5f, 65504.0f}));
  EXPECT_EQ(file.to_f32("bf16"), (std::vector<float>{1.0f, -3.0f}));
  EXPECT_EQ(file.to_i64("i64"), i64);
  EXPECT_EQ(file.to_i64("i32"), (std::vector<std::int64_t>(i32.begin(), i32.end())));
  EXPECT_EQ(file.to_i64("i16"), (std::vector<std::int64_t>(i16.begin(), i16.end())));
  EXPECT_EQ(file.to_i64("i8"), (std::vector<std::int64_t>(i8.begin(), i8.end())));
  EXPECT_EQ(file.to_i64("u8"), (std::vector<std::int64_t>(u8.begin(), u8.end())));
  EXPECT_EQ(file.to_i64("bool"), (std::vector<std::int64_t>{1, 0, 0, 1}));

  // A copy shares the parsed file and outlives the original.
  SafetensorsFile copy = file;
  EXPECT_EQ(copy.to_i64("u8"), file.to_i64("u8"));

  // Serialising in memory gives the bytes the file has.
  const auto mem = vkrnn::serialize_safetensors(tensors, meta);
  std::ifstream in(path, std::ios::binary);
  std::vector<char> disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(mem.size(), disk.size());
  EXPECT_EQ(std::memcmp(mem.data(), disk.data(), disk.size()), 0);
}

namespace {

// `back`, the 16-bit tensor made from values[i] = to_float(i) for every pattern i, holds every
// pattern i again; a NaN may come back as another NaN.
void expect_all_patterns(const SafetensorsTensorData& back, const std::vector<float>& values,
                         float (*to_float)(std::uint16_t)) {
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto bits = std::uint16_t(std::to_integer<unsigned>(back.data[2 * i]) |
                                    (std::to_integer<unsigned>(back.data[2 * i + 1]) << 8));
    if (std::isnan(values[i])) {
      ASSERT_TRUE(std::isnan(to_float(bits))) << i;
    } else {
      ASSERT_EQ(bits, i);
    }
  }
}

}  // namespace

TEST(Safetensors, AllHalfPatternsThroughF16Tensors) {
  // Every binary16 pattern stored raw reads back as half_to_float; re-encoding the floats with
  // f16_tensor reproduces the patterns (NaNs stay NaN).
  std::vector<std::uint16_t> bits(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) bits[i] = std::uint16_t(i);
  const auto file = SafetensorsFile::parse(
      vkrnn::serialize_safetensors({{"h", StDType::F16, {256, 256}, le_bytes(bits)}}), "mem://f16");
  const auto values = file.to_f32("h");
  ASSERT_EQ(values.size(), 65536u);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    ASSERT_TRUE(same_bits(values[i], vkrnn::half_to_float(std::uint16_t(i)))) << i;
  }
  expect_all_patterns(vkrnn::f16_tensor("h", {65536}, values), values, vkrnn::half_to_float);
}

TEST(Safetensors, AllBf16PatternsThroughBf16Tensors) {
  std::vector<std::uint16_t> bits(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) bits[i] = std::uint16_t(i);
  const auto file = SafetensorsFile::parse(
      vkrnn::serialize_safetensors({{"b", StDType::BF16, {65536}, le_bytes(bits)}}), "mem://bf16");
  const auto values = file.to_f32("b");
  for (std::uint32_t i = 0; i < 65536; ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(values[i]), i << 16) << i;
  }
  expect_all_patterns(vkrnn::bf16_tensor("b", {65536}, values), values, vkrnn::bf16_to_float);
}

TEST(Safetensors, F16TensorSpecialValues) {
  // Subnormals, the largest finite, overflow to inf, inf, NaN, ties.
  const std::vector<float> in = {0x1p-24f, 0x1p-25f, 0x1.8p-25f, -0x1p-24f * 3, 0x1.ffcp-15f,
                                 65504.0f, 65519.0f, 65520.0f, -kInf,       kNaN,
                                 1.0f + 0x1p-11f, 1.0f + 0x3p-11f};
  const std::vector<float> want = {0x1p-24f, 0.0f,     0x1p-24f, -0x1p-24f * 3, 0x1p-14f,
                                   65504.0f, 65504.0f, kInf,     -kInf,         kNaN,
                                   1.0f,     1.0f + 0x1p-9f};
  const auto file = SafetensorsFile::parse(
      vkrnn::serialize_safetensors({vkrnn::f16_tensor("x", {in.size()}, in)}), "mem://special");
  const auto got = file.to_f32("x");
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
    } else {
      EXPECT_TRUE(same_bits(got[i], want[i])) << i << ": got " << got[i] << " want " << want[i];
    }
  }
}

TEST(Safetensors, EmptyScalarAndNoTensors) {
  std::vector<SafetensorsTensorData> tensors;
  tensors.push_back(vkrnn::f32_tensor("empty_a", {0}, {}));
  tensors.push_back(vkrnn::f32_tensor("empty_b", {4, 0, 3}, {}));
  tensors.push_back(vkrnn::i64_tensor("empty_c", {0, 0}, {}));
  const float scalar = 42.5f;
  tensors.push_back(vkrnn::f32_tensor("scalar", {}, std::span<const float>(&scalar, 1)));
  tensors.push_back(vkrnn::f32_tensor("empty_d", {0}, {}));
  const auto file = SafetensorsFile::parse(vkrnn::serialize_safetensors(tensors), "mem://empty");
  EXPECT_TRUE(file.to_f32("empty_a").empty());
  EXPECT_TRUE(file.to_f32("empty_b", {4, 0, 3}).empty());
  EXPECT_TRUE(file.to_i64("empty_c").empty());
  EXPECT_TRUE(file.raw("empty_d").empty());
  EXPECT_EQ(file.entry("scalar").shape, std::vector<std::size_t>{});
  EXPECT_EQ(file.to_f32("scalar", {}), std::vector<float>{42.5f});
  EXPECT_TRUE(file.metadata().empty());

  const auto none = SafetensorsFile::parse(vkrnn::serialize_safetensors({}, {{"k", "v"}}), "mem://none");
  EXPECT_TRUE(none.names().empty());
  EXPECT_EQ(none.metadata().at("k"), "v");
  // A minimal hand-written file: "{}" and nothing else.
  EXPECT_TRUE(SafetensorsFile::parse(make_file("{}", 0), "mem://braces").names().empty());
  // Whitespace padding (what writers use for alignment) is fine.
  EXPECT_TRUE(SafetensorsFile::parse(make_file("  {}      ", 0), "mem://pad").names().empty());
}

TEST(Safetensors, TensorsInAnyHeaderOrder) {
  // Header order and data order are independent; only the tiling matters.
  const std::string header =
      R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("a":{"shape":[3],"data_offsets":[2,5],"dtype":"U8"},"__metadata__":{"x":"y"}})";
  const auto file = SafetensorsFile::parse(make_file(header, 5), "mem://order");
  EXPECT_EQ(file.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(file.entry("a").offset, 8 + header.size() + 2);
  EXPECT_EQ(file.to_i64("a"), (std::vector<std::int64_t>{15, 22, 29}));  // pattern i * 7 + 1
  EXPECT_EQ(file.to_i64("b"), (std::vector<std::int64_t>{1, 8}));
}

// ---------------------------------------------------------------------------------------------
// Accessor errors

TEST(Safetensors, AccessorErrors) {
  std::vector<SafetensorsTensorData> tensors;
  for (int i = 0; i < 20; ++i) {
    tensors.push_back(vkrnn::f32_tensor("encoder.layer" + std::to_string(i) + ".weight", {1},
                                        std::vector<float>{float(i)}));
  }
  tensors.push_back(vkrnn::i32_tensor("ids", {2}, std::vector<std::int32_t>{1, 2}));
  tensors.push_back({"flags", StDType::BOOL, {3}, le_bytes(std::vector<std::uint8_t>{0, 1, 2})});
  const auto file = SafetensorsFile::parse(vkrnn::serialize_safetensors(tensors), "mem://acc");

  EXPECT_TRUE(throws_error([&] { file.entry("encoder.layer7.bias"); }, ErrorCode::not_found,
                           {"mem://acc", "'encoder.layer7.bias'", "22 tensors",
                            "'encoder.layer7.weight'"}));
  EXPECT_TRUE(throws_error([&] { file.raw("nope"); }, ErrorCode::not_found, {"mem://acc", "'nope'"}));
  EXPECT_TRUE(throws_error([&] { file.to_f32("nope"); }, ErrorCode::not_found, {"'nope'"}));
  EXPECT_TRUE(throws_error([&] { file.to_i64("nope"); }, ErrorCode::not_found, {"'nope'"}));
  EXPECT_FALSE(file.contains("nope"));
  const auto empty = SafetensorsFile::parse(make_file("{}", 0), "mem://no-tensors");
  EXPECT_TRUE(throws_error([&] { empty.entry("w"); }, ErrorCode::not_found,
                           {"mem://no-tensors", "'w'", "no tensors"}));

  EXPECT_TRUE(throws_error([&] { file.to_f32("ids"); }, ErrorCode::invalid_argument,
                           {"mem://acc", "'ids'", "I32"}));
  EXPECT_TRUE(throws_error([&] { file.to_f32("flags"); }, ErrorCode::invalid_argument,
                           {"'flags'", "BOOL"}));
  EXPECT_TRUE(throws_error([&] { file.to_i64("encoder.layer0.weight"); },
                           ErrorCode::invalid_argument, {"mem://acc", "'encoder.layer0.weight'", "F32"}));
  EXPECT_TRUE(throws_error([&] { file.to_f32("encoder.layer3.weight", {1, 1}); },
                           ErrorCode::invalid_argument,
                           {"mem://acc", "'encoder.layer3.weight'", "shape [1]", "expected [1, 1]"}));
  EXPECT_TRUE(throws_error([&] { file.to_f32("encoder.layer3.weight", {}); },
                           ErrorCode::invalid_argument, {"expected []"}));
  EXPECT_TRUE(throws_error([&] { file.to_i64("flags"); }, ErrorCode::format,
                           {"mem://acc", "'flags'", "element 2", "0x02"}));
}

TEST(Safetensors, OpenErrors) {
  TempDir dir;
  const std::string missing = dir.file("does-not-exist.safetensors");
  EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(missing); }, ErrorCode::io,
                           {missing, std::strerror(ENOENT)}));
  EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(dir.path().string()); }, ErrorCode::io,
                           {dir.path().string(), std::strerror(EISDIR)}));
  if (::geteuid() != 0) {  // root reads anything
    const std::string locked = dir.file("locked.safetensors");
    vkrnn::write_safetensors(locked, {});
    fs::permissions(locked, fs::perms::none);
    EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(locked); }, ErrorCode::io,
                             {locked, std::strerror(EACCES)}));
  }
  // A corrupt file on disk: the message names its path.
  const std::string corrupt = dir.file("corrupt.safetensors");
  std::ofstream(corrupt, std::ios::binary) << "short";
  EXPECT_TRUE(throws_error([&] { SafetensorsFile::open(corrupt); }, ErrorCode::format,
                           {corrupt, "5 bytes"}));
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  auto write = [&](std::vector<SafetensorsTensorData> t) {
    return [&path, t = std::move(t)] { vkrnn::write_safetensors(path, t); };
  };
  EXPECT_TRUE(throws_error(write({{"w", StDType::F32, {2, 3}, std::vector<std::byte>(20)}}),
                           ErrorCode::invalid_argument, {"'w'", "20 data bytes", "[2, 3]", "24"}));
  EXPECT_TRUE(throws_error(write({vkrnn::f32_tensor("a", {1}, std::vector<float>{1}),
                                  vkrnn::f32_tensor("a", {1}, std::vector<float>{2})}),
                           ErrorCode::invalid_argument, {"'a'", "duplicate"}));
  EXPECT_TRUE(throws_error(write({{"", StDType::U8, {0}, {}}}), ErrorCode::invalid_argument,
                           {"empty tensor name"}));
  EXPECT_TRUE(throws_error(write({{"__metadata__", StDType::U8, {0}, {}}}),
                           ErrorCode::invalid_argument, {"reserved"}));
  EXPECT_TRUE(throws_error(write({{"bad\xff", StDType::U8, {0}, {}}}), ErrorCode::invalid_argument,
                           {"UTF-8"}));
  EXPECT_TRUE(throws_error(write({{"big", StDType::F32, {std::size_t(1) << 62, 8}, {}}}),
                           ErrorCode::invalid_argument, {"'big'", "overflow"}));
  EXPECT_TRUE(throws_error([] { vkrnn::f32_tensor("v", {2, 2}, std::vector<float>(3)); },
                           ErrorCode::invalid_argument, {"'v'", "3 values", "[2, 2]"}));
  EXPECT_FALSE(fs::exists(path)) << "nothing written after a rejected call";
  const std::string no_dir = dir.file("missing-dir/w.safetensors");
  EXPECT_TRUE(throws_error([&] { vkrnn::write_safetensors(no_dir, {}); }, ErrorCode::io,
                           {"missing-dir", std::strerror(ENOENT)}));
  // Overwriting an existing file replaces it and leaves no temporary behind.
  vkrnn::write_safetensors(path, {vkrnn::f32_tensor("a", {1}, std::vector<float>{1})});
  vkrnn::write_safetensors(path, {vkrnn::f32_tensor("b", {1}, std::vector<float>{2})});
  EXPECT_EQ(SafetensorsFile::open(path).names(), std::vector<std::string>{"b"});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// ---------------------------------------------------------------------------------------------
// Malformed files: each rule its own test; every message names the origin (checked by rejects)
// and the tensor where there is one.

TEST(SafetensorsMalformed, ShorterThanLengthField) {
  for (std::size_t n = 0; n < 8; ++n) {
    std::vector<std::byte> bytes(n, std::byte{0});
    EXPECT_TRUE(throws_error([&] { SafetensorsFile::parse(bytes, "mem://short"); }, ErrorCode::format,
                             {"mem://short", std::to_string(n) + " bytes", "8-byte"}))
        << n;
  }
}

TEST(SafetensorsMalformed, HeaderLengthBeyondFile) {
  EXPECT_TRUE(rejects("{}", 0, {"header length 3", "2 bytes"}, 3));
  EXPECT_TRUE(rejects("{}", 10, {"header length 1000", "12 bytes"}, 1000));
  EXPECT_TRUE(rejects("", 0, {"header length 1"}, 1));
}

TEST(SafetensorsMalformed, HeaderLengthAbsurd) {
  EXPECT_TRUE(rejects("{}", 0, {"header length 104857601", "limit"}, (100u << 20) + 1));
  EXPECT_TRUE(rejects("{}", 0, {"header length 18446744073709551615", "limit"},
                      std::numeric_limits<std::uint64_t>::max()));
  EXPECT_TRUE(rejects("{}", 0, {"limit"}, std::uint64_t(1) << 63));
}

TEST(SafetensorsMalformed, HeaderNotJson) {
  EXPECT_TRUE(rejects("", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{\"a\":}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{} {}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects(std::string_view("{}\0", 3), 0, {"invalid JSON", "NUL byte at byte 2"}));
  EXPECT_TRUE(rejects(std::string_view("{\"a\":\"\0\"}", 9), 0, {"NUL byte"}));
  EXPECT_TRUE(rejects("{\"a\":1,}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{\"a\":NaN}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{/*c*/}", 0, {"invalid JSON"}));
}

TEST(SafetensorsMalformed, HeaderInvalidUtf8) {
  EXPECT_TRUE(rejects("{\"w\xff\":{}}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{\"__metadata__\":{\"k\":\"\xc3\x28\"}}", 0, {"invalid JSON"}));
  EXPECT_TRUE(rejects("{\"a\":\"\xed\xa0\x80\"}", 0, {"invalid JSON"}));  // UTF-16 surrogate
}

TEST(SafetensorsMalformed, HeaderNotObject) {
  EXPECT_TRUE(rejects("[]", 0, {"JSON object", "a list"}));
  EXPECT_TRUE(rejects("\"w\"", 0, {"JSON object", "a string"}));
  EXPECT_TRUE(rejects("12", 0, {"JSON object", "an integer"}));
  EXPECT_TRUE(rejects("null", 0, {"JSON object", "null"}));
}

TEST(SafetensorsMalformed, NestingTooDeep) {
  std::string deep = "{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_TRUE(rejects(deep, 0, {"entry 'w[0][0]", "nested deeper"}));
  std::string deep_top(100000, '[');
  EXPECT_TRUE(rejects(deep_top, 0, {"nested deeper"}));
}

TEST(SafetensorsMalformed, EntryNotObject) {
  EXPECT_TRUE(rejects(R"({"w":5})", 0, {"'w'", "entry must be an object", "an integer"}));
  EXPECT_TRUE(rejects(R"({"w":["F32",[1],[0,4]]})", 4, {"'w'", "a list"}));
  EXPECT_TRUE(rejects(R"({"w":null})", 0, {"'w'", "null"}));
}

TEST(SafetensorsMalformed, EntryMissingKey) {
  EXPECT_TRUE(rejects(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, {"'w'", "missing key \"dtype\""}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, {"'w'", "missing key \"shape\""}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[1]}})", 4, {"'w'", "missing key \"data_offsets\""}));
  EXPECT_TRUE(rejects(R"({"w":{}})", 0, {"'w'", "missing key"}));
}

TEST(SafetensorsMalformed, EntryExtraKey) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"stride":[1]}})", 4,
                      {"'w'", "unexpected key 'stride'"}));
}

TEST(SafetensorsMalformed, UnknownDType) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1,
                      {"'w'", "unknown dtype 'F8_E4M3'", "supported: F64, F32"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4,
                      {"'w'", "unknown dtype 'f32'"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"","shape":[1],"data_offsets":[0,4]}})", 4, {"'w'", "unknown dtype"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4,
                      {"'w'", "dtype must be a string"}));
}

TEST(SafetensorsMalformed, ShapeNotListOfNonNegativeIntegers) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"4", "found an integer"},
      {"\"[4]\"", "found a string"},
      {"null", "found null"},
      {"{\"0\":4}", "found an object"},
      {"[-4]", "dimension 0 is a negative integer"},
      {"[1,-1]", "dimension 1 is a negative integer"},
      {"[4.0]", "dimension 0 is a non-integer number"},
      {"[4e0]", "dimension 0 is a non-integer number"},
      {"[[4]]", "dimension 0 is a list"},
      {"[true]", "dimension 0 is a boolean"},
      {"[\"4\"]", "dimension 0 is a string"},
      {"[18446744073709551616]", "dimension 0 is a non-integer number"},  // > u64: parsed as double
  };
  for (const auto& [shape, needle] : cases) {
    EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":)" + shape + R"(,"data_offsets":[0,4]}})", 4,
                        {"'w'", "shape must be a list of non-negative integers", needle}))
        << shape;
  }
}

TEST(SafetensorsMalformed, ElementCountOverflow) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
                      {"'w'", "overflows"}));
  // Fits as an element count, overflows as bytes.
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
                      {"'w'", "overflows"}));
  // A zero dimension does not excuse the others from overflowing.
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[0,18446744073709551615,2],"data_offsets":[0,0]}})", 0,
                      {"'w'", "overflows"}));
  // Huge but consistent claims end at the size check, not in an allocation.
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,18446744073709551615]}})",
                      0, {"'w'", "beyond"}));
}

TEST(SafetensorsMalformed, DataOffsetsNotTwoIntegers) {
  for (const std::string offsets : {"4", "[4]", "[0,4,8]", "[]", "[-1,3]", "[0,4.0]", "[\"0\",4]",
                                    "null", "[0,18446744073709551616]", "[[0],[4]]"}) {
    EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + offsets + "}}", 4,
                        {"'w'", "data_offsets must be two non-negative integers"}))
        << offsets;
  }
}

TEST(SafetensorsMalformed, DataOffsetsBeginAfterEnd) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4,
                      {"'w'", "[4, 0]", "begin > end"}));
}

TEST(SafetensorsMalformed, ByteCountMismatch) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4,
                      {"'w'", "span 4 bytes", "shape [2] of F32 needs 8 bytes"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})", 4,
                      {"'w'", "span 4 bytes", "needs 2 bytes"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[3,0],"data_offsets":[0,4]}})", 4,
                      {"'w'", "needs 0 bytes"}));
}

TEST(SafetensorsMalformed, OffsetsBeyondDataBuffer) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7,
                      {"'w'", "[0, 8]", "beyond the 7-byte data buffer"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
                      4, {"'w'", "beyond"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[5,5]}})", 4, {"'w'", "beyond"}));
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      8, {"'b'", "overlap tensor 'a'"}));
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                      4, {"'b'", "overlap tensor 'a'"}));
  // An empty tensor inside another is an overlap too (the specification's tiling rule).
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                      8, {"'e'", "overlap"}));
}

TEST(SafetensorsMalformed, GapsAndTrailingBytes) {
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                      12, {"'b'", "gap of 4"}));
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, {"'a'", "gap of 4"}));
  EXPECT_TRUE(rejects(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 5,
                      {"1 trailing bytes", "5 bytes"}));
  EXPECT_TRUE(rejects("{}", 1, {"1 trailing bytes"}));
}

TEST(SafetensorsMalformed, DuplicateNames) {
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      8, {"duplicate tensor name 'w'"}));
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", 4,
                      {"duplicate key 'dtype'", "entry 'w'"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":{"k":"a","k":"b"}})", 0,
                      {"duplicate key 'k'", "entry '__metadata__'"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":{},"__metadata__":{}})", 0, {"duplicate", "'__metadata__'"}));
  // Same name spelled with an escape is still the same name.
  EXPECT_TRUE(rejects(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                      R"("\u0077":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})",
                      0, {"duplicate tensor name 'w'"}));
}

TEST(SafetensorsMalformed, MetadataNotStrings) {
  EXPECT_TRUE(rejects(R"({"__metadata__":{"k":1}})", 0, {"__metadata__", "'k'", "must be a string", "an integer"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":{"k":null}})", 0, {"'k'", "null"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":{"k":{"a":"b"}}})", 0, {"'k'", "an object"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":["a"]})", 0, {"__metadata__", "object of strings", "a list"}));
  EXPECT_TRUE(rejects(R"({"__metadata__":"pt"})", 0, {"__metadata__", "a string"}));
}

TEST(SafetensorsMalformed, EmptyTensorName) {
  EXPECT_TRUE(rejects(R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, {"tensor ''", "empty"}));
}

TEST(SafetensorsMalformed, HostileNamesAreEscapedInMessages) {
  const std::string name = "evil\\u001b[31m\\n" + std::string(1000, 'x');
  const std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,3]}}";
  try {
    SafetensorsFile::parse(make_file(header, 3), "mem://hostile");
    FAIL() << "accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find("'evil\\x1b[31m\\x0axxx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(1010 bytes)"), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 500u) << msg;
  }
  // A long multi-byte name is cut between characters, not inside one.
  std::string wide;
  for (int i = 0; i < 200; ++i) wide += "\xe2\x9c\x93";  // U+2713, 3 bytes
  try {
    SafetensorsFile::parse(make_file("{\"" + wide + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2),
                           "mem://wide");
    FAIL() << "accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("\xe2\x9c\x93...' (600 bytes)"), std::string::npos) << msg;
  }
}

TEST(SafetensorsMalformed, BoolBytesOnlyZeroOrOne) {
  const auto file = SafetensorsFile::parse(
      make_file(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2), "mem://bool");
  // The data pattern is 1, 8: the second is not a bool.
  EXPECT_TRUE(throws_error([&] { file.to_i64("m"); }, ErrorCode::format,
                           {"mem://bool", "'m'", "element 1", "0x08"}));
}

// ---------------------------------------------------------------------------------------------
// Corruption: whatever happens to the bytes, the reader either throws Error(format) or returns a
// file whose every tensor reads back inside the buffer. Run under ASan/UBSan to make the
// "never out of bounds" part sharp.

namespace {

std::vector<std::byte> fuzz_base() {
  std::vector<SafetensorsTensorData> t;
  t.push_back(vkrnn::f32_tensor("a.weight", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  t.push_back(vkrnn::f16_tensor("b", {3}, std::vector<float>{1, 2, 3}));
  t.push_back(vkrnn::bf16_tensor("c", {}, std::vector<float>{1}));
  t.push_back(vkrnn::i64_tensor("d", {2}, std::vector<std::int64_t>{1, 2}));
  t.push_back(vkrnn::i32_tensor("e", {0, 4}, {}));
  t.push_back({"f", StDType::BOOL, {2}, le_bytes(std::vector<std::uint8_t>{1, 0})});
  t.push_back({"g", StDType::F64, {1}, le_bytes(std::vector<double>{3.5})});
  t.push_back({"h", StDType::U8, {3}, le_bytes(std::vector<std::uint8_t>{1, 2, 3})});
  return vkrnn::serialize_safetensors(t, {{"format", "pt"}});
}

// Parses and, on success, touches everything; false if something other than Error(format)
// escaped or an invariant broke.
::testing::AssertionResult survives(const std::vector<std::byte>& bytes) {
  const std::size_t size = bytes.size();
  try {
    const auto file = SafetensorsFile::parse(bytes, "mem://fuzz");
    for (const auto& name : file.names()) {
      const auto& e = file.entry(name);
      std::size_t count = 1;
      for (auto d : e.shape) count *= d;
      if (e.offset > size || e.bytes > size - e.offset || e.bytes != count * vkrnn::dtype_size(e.dtype)) {
        return ::testing::AssertionFailure() << "bad entry " << name;
      }
      volatile std::uint8_t sink = 0;
      for (std::byte b : file.raw(name)) sink = sink ^ std::to_integer<std::uint8_t>(b);
      try {
        if (e.dtype == StDType::F32 || e.dtype == StDType::F16 || e.dtype == StDType::BF16 ||
            e.dtype == StDType::F64) {
          if (file.to_f32(name).size() != count) return ::testing::AssertionFailure() << "count";
        } else if (file.to_i64(name).size() != count) {
          return ::testing::AssertionFailure() << "count";
        }
      } catch (const Error& err) {
        if (err.code() != ErrorCode::format || e.dtype != StDType::BOOL) {
          return ::testing::AssertionFailure() << "accessor threw " << err.what();
        }
      }
    }
    for (const auto& [k, v] : file.metadata()) (void)k, (void)v;
  } catch (const Error& e) {
    if (e.code() != ErrorCode::format) return ::testing::AssertionFailure() << "code " << e.what();
    if (std::string(e.what()).find("mem://fuzz") == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks the origin: " << e.what();
    }
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "non-vkrnn exception: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

void fuzz(std::uint32_t seed, int iterations) {
  const auto base = fuzz_base();
  ASSERT_TRUE(survives(base));
  std::uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= std::uint64_t(std::to_integer<unsigned>(base[i])) << (8 * i);
  const std::vector<std::string> tokens = {
      "\"", "{", "}", "[", "]", ",", ":", "0", "-1", "18446744073709551615", "18446744073709551616",
      "4294967296", "1.5", "1e999", "\"F32\"", "\"BOOL\"", "\"__metadata__\"", "null", "true",
      "\\u0000", "\xff", "\xc3", "\"shape\":[]", "\"data_offsets\":[0,0]", " "};
  std::mt19937 rng(seed);
  auto pick = [&](std::size_t n) { return std::size_t(rng() % n); };
  for (int it = 0; it < iterations; ++it) {
    auto bytes = base;
    const int mutations = 1 + int(pick(3));
    for (int m = 0; m < mutations && !bytes.empty(); ++m) {
      // Mostly aim at the header: that is where the parser's decisions are.
      const std::size_t hdr_end = std::min<std::size_t>(bytes.size(), 8 + header_len);
      const std::size_t pos = hdr_end > 8 && pick(4) ? 8 + pick(hdr_end - 8) : pick(bytes.size());
      switch (pick(7)) {
        case 0: bytes[pos] ^= std::byte(1u << pick(8)); break;
        case 1: bytes[pos] = std::byte(rng() & 0xff); break;
        case 2: bytes.resize(pick(bytes.size() + 1)); break;
        case 3: {  // splice a JSON token over the header
          const auto& tok = tokens[pick(tokens.size())];
          for (std::size_t k = 0; k < tok.size() && pos + k < bytes.size(); ++k) {
            bytes[pos + k] = std::byte(tok[k]);
          }
          break;
        }
        case 4: {  // insert a token (header length left stale, or fixed up)
          const auto& tok = tokens[pick(tokens.size())];
          const auto tb = to_bytes(tok);
          bytes.insert(bytes.begin() + std::ptrdiff_t(pos), tb.begin(), tb.end());
          if (pick(2) && bytes.size() >= 8) {
            const std::uint64_t n = header_len + tok.size();
            for (int i = 0; i < 8; ++i) bytes[i] = std::byte((n >> (8 * i)) & 0xff);
          }
          break;
        }
        case 5: {  // rewrite the length field near its value or anywhere
          if (bytes.size() < 8) break;
          const std::uint64_t n = pick(2) ? header_len + std::uint64_t(int(pick(33)) - 16) : (std::uint64_t(rng()) << 32 | rng());
          for (int i = 0; i < 8; ++i) bytes[i] = std::byte((n >> (8 * i)) & 0xff);
          break;
        }
        case 6:  // delete a byte
          bytes.erase(bytes.begin() + std::ptrdiff_t(pos));
          break;
      }
    }
    ASSERT_TRUE(survives(bytes)) << "seed " << seed << " iteration " << it;
  }
}

}  // namespace

TEST(SafetensorsFuzz, EveryByteEveryBitAndEveryTruncation) {
  const auto base = fuzz_base();
  for (std::size_t pos = 0; pos < base.size(); ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bytes = base;
      bytes[pos] ^= std::byte(1u << bit);
      ASSERT_TRUE(survives(bytes)) << "byte " << pos << " bit " << bit;
    }
    for (unsigned char v : {0x00, 0x20, 0x22, 0x2c, 0x2d, 0x30, 0x39, 0x3a, 0x5b, 0x5d, 0x7b, 0x7d, 0xff}) {
      auto bytes = base;
      bytes[pos] = std::byte(v);
      ASSERT_TRUE(survives(bytes)) << "byte " << pos << " = " << int(v);
    }
  }
  for (std::size_t n = 0; n <= base.size(); ++n) {
    ASSERT_TRUE(survives(std::vector<std::byte>(base.begin(), base.begin() + std::ptrdiff_t(n)))) << n;
  }
}

TEST(SafetensorsFuzz, RandomMutations) { fuzz(12345, 20000); }

TEST(SafetensorsFuzzLong, RandomMutations) {
  for (std::uint32_t seed = 1; seed <= 20; ++seed) fuzz(seed, 50000);
}

// ---------------------------------------------------------------------------------------------
// vkrnn/half.hpp

namespace {

// The value of a binary16 pattern, computed independently in double.
double half_reference(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) v = std::ldexp(double(mant), -24);
  else if (exp == 31) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(double(1024 + mant), exp - 25);
  return sign ? -v : v;
}

// Rounds x to a format with `bits` significant bits, minimum normal exponent emin (of the
// leading bit) and overflow threshold `overflow` (values >= it in magnitude become inf), to
// nearest even, in double arithmetic (exact here: the inputs are floats).
double round_reference(double x, int bits, int emin, double overflow) {
  if (std::isnan(x) || std::isinf(x)) return x;
  if (x == 0) return x;
  int e;
  std::frexp(x, &e);  // |x| = m * 2^e, m in [0.5, 1): leading bit at 2^(e-1)
  const int lead = std::max(e - 1, emin);
  const double ulp = std::ldexp(1.0, lead - (bits - 1));
  const double r = std::nearbyint(x / ulp) * ulp;  // default rounding mode: ties to even
  if (std::fabs(r) >= overflow) return std::copysign(std::numeric_limits<double>::infinity(), x);
  return r == 0 ? std::copysign(0.0, x) : r;
}

double half_round_reference(float f) { return round_reference(f, 11, -14, 65536.0); }
double bf16_round_reference(float f) { return round_reference(f, 8, -126, std::ldexp(1.0, 128)); }

::testing::AssertionResult same_value(double got, double want) {
  if (std::isnan(want) ? std::isnan(got) : (got == want && std::signbit(got) == std::signbit(want))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << got << " want " << want;
}

// Random floats across the whole range and concentrated on the format's own range.
std::vector<float> probe_floats(std::uint32_t seed, int n, int exp_lo, int exp_hi) {
  std::mt19937 rng(seed);
  std::vector<float> out;
  for (int i = 0; i < n; ++i) {
    if (i % 2) {
      out.push_back(std::bit_cast<float>(std::uint32_t(rng())));
    } else {
      const int e = exp_lo + int(rng() % std::uint32_t(exp_hi - exp_lo + 1));
      const std::uint32_t bits = (rng() & 0x807fffffu) | (std::uint32_t(e + 127) << 23);
      out.push_back(std::bit_cast<float>(bits));
    }
  }
  return out;
}

}  // namespace

TEST(Half, AllPatternsMatchReferenceAndRoundTrip) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);
  for (std::uint32_t i = 0; i < 65536; ++i) {
    const auto h = std::uint16_t(i);
    const float f = vkrnn::half_to_float(h);
    ASSERT_TRUE(same_value(f, half_reference(h))) << "pattern " << i;
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(vkrnn::half_to_float(vkrnn::float_to_half(f)))) << i;
    } else {
      ASSERT_EQ(vkrnn::float_to_half(f), h) << "pattern " << i;
    }
  }
}

TEST(Half, FloatToHalfRoundsToNearestEven) {
  for (float f : probe_floats(7, 400000, -30, 17)) {
    ASSERT_TRUE(same_value(vkrnn::half_to_float(vkrnn::float_to_half(f)), half_round_reference(f)))
        << "float " << std::hexfloat << f;
  }
  // Every midpoint between neighbouring halves (exact in float) and its float neighbours.
  for (std::uint32_t i = 0; i < 0x7bff; ++i) {  // up to the largest finite half
    const double lo = half_reference(std::uint16_t(i)), hi = half_reference(std::uint16_t(i + 1));
    const float mid = float((lo + hi) / 2);
    ASSERT_EQ(double(mid), (lo + hi) / 2);
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf)}) {
      for (float s : {f, -f}) {
        ASSERT_TRUE(same_value(vkrnn::half_to_float(vkrnn::float_to_half(s)), half_round_reference(s)))
            << "float " << std::hexfloat << s;
      }
    }
  }
  // Quiet NaN stays NaN, signalling NaN payloads do not turn into inf.
  EXPECT_TRUE(std::isnan(vkrnn::half_to_float(vkrnn::float_to_half(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(vkrnn::half_to_float(vkrnn::float_to_half(std::bit_cast<float>(0xffc00000u)))));
}

TEST(Bf16, FloatToBf16RoundsToNearestEven) {
  for (float f : probe_floats(11, 400000, -140, 127)) {
    ASSERT_TRUE(same_value(vkrnn::bf16_to_float(vkrnn::float_to_bf16(f)), bf16_round_reference(f)))
        << "float " << std::hexfloat << f;
  }
  for (std::uint32_t i = 0; i < 0x7f80; ++i) {  // the last midpoint (above the largest finite) -> inf
    const float lo = vkrnn::bf16_to_float(std::uint16_t(i)), hi = vkrnn::bf16_to_float(std::uint16_t(i + 1));
    const float mid = std::bit_cast<float>((std::uint32_t(i) << 16) | 0x8000u);
    if (i + 1 < 0x7f80) {
      ASSERT_EQ(double(mid), (double(lo) + double(hi)) / 2);
    }
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf)}) {
      for (float s : {f, -f}) {
        ASSERT_TRUE(same_value(vkrnn::bf16_to_float(vkrnn::float_to_bf16(s)), bf16_round_reference(s)))
            << "float " << std::hexfloat << s;
      }
    }
  }
  EXPECT_EQ(vkrnn::float_to_bf16(1.0f + 0x1p-8f), vkrnn::float_to_bf16(1.0f));  // tie to even (down)
  EXPECT_EQ(vkrnn::bf16_to_float(vkrnn::float_to_bf16(1.0f + 0x3p-8f)), 1.0f + 0x1p-6f);  // up
  EXPECT_EQ(vkrnn::bf16_to_float(vkrnn::float_to_bf16(std::numeric_limits<float>::max())), kInf);
  EXPECT_TRUE(std::isnan(vkrnn::bf16_to_float(vkrnn::float_to_bf16(std::bit_cast<float>(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(vkrnn::bf16_to_float(vkrnn::float_to_bf16(std::bit_cast<float>(0xff800001u)))));
}

// ---------------------------------------------------------------------------------------------
// tools/safetensors_io.py against this reader/writer. The fixture is defined twice (here and in
// _fixture() there); both directions must agree bit for bit.

namespace {

std::string tool_path() {
  if (std::getenv("VKRNN_SOURCE_DIR")) return vkrnn::test::source_path("tools/safetensors_io.py");
  return (fs::path(__FILE__).parent_path().parent_path() / "tools" / "safetensors_io.py").string();
}

bool python_has_numpy() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

const std::string kUnicodeName = "\xc3\xbc" "n\xc3\xaf" "code.weight";

std::vector<float> fixture_f16_inputs() {
  return {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0x1p-14f, 0x1p-24f, 0.1f, 70000.0f, kNaN};
}
std::vector<float> fixture_bf16_inputs() { return {1.0f, 3.14159265f, -1e30f, 1.00390625f, 1.01171875f}; }

std::vector<SafetensorsTensorData> fixture_tensors() {
  std::vector<SafetensorsTensorData> t;
  t.push_back(vkrnn::f32_tensor("f32", {2, 3},
                                std::vector<float>{-1.5f, 0.0f, float(1.0 / 3.0),
                                                   std::numeric_limits<float>::max(),
                                                   std::numeric_limits<float>::denorm_min(), -0.0f}));
  t.push_back(vkrnn::f32_tensor("f32_special", {3}, std::vector<float>{kInf, -kInf, kNaN}));
  t.push_back(vkrnn::f16_tensor("f16", {2, 5}, fixture_f16_inputs()));
  t.push_back(vkrnn::bf16_tensor("bf16", {5}, fixture_bf16_inputs()));
  t.push_back({"f64", StDType::F64, {3}, le_bytes(std::vector<double>{1.0 / 3.0, 1e300, -2.0})});
  t.push_back(vkrnn::i64_tensor("i64", {4},
                                std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(),
                                                          std::numeric_limits<std::int64_t>::max(), 0, -1}));
  t.push_back(vkrnn::i32_tensor("i32", {2, 2},
                                std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::min(),
                                                          std::numeric_limits<std::int32_t>::max(), 7, -7}));
  t.push_back({"i16", StDType::I16, {3}, le_bytes(std::vector<std::int16_t>{-32768, 32767, 1})});
  t.push_back({"i8", StDType::I8, {3}, le_bytes(std::vector<std::int8_t>{-128, 127, 0})});
  t.push_back({"u8", StDType::U8, {4}, le_bytes(std::vector<std::uint8_t>{0, 1, 128, 255})});
  t.push_back({"bool", StDType::BOOL, {3}, le_bytes(std::vector<std::uint8_t>{1, 0, 1})});
  t.push_back(vkrnn::f32_tensor("scalar", {}, std::vector<float>{42.5f}));
  t.push_back(vkrnn::f32_tensor("empty", {0, 3}, {}));
  t.push_back(vkrnn::f32_tensor(kUnicodeName, {1}, std::vector<float>{7.0f}));
  return t;
}

const std::map<std::string, std::string> kFixtureMetadata = {{"format", "pt"},
                                                             {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"}};

}  // namespace

TEST(SafetensorsPython, FileWrittenByPythonLoadsHere) {
  if (!python_has_numpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy (scripts/install-deps.sh installs it)";
  TempDir dir;
  const std::string path = dir.file("from_python.safetensors");
  const std::string cmd = "/usr/bin/python3 '" + tool_path() + "' --selftest-write '" + path + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto file = SafetensorsFile::open(path);

  // The same tensors, serialised here, must be what Python wrote, tensor by tensor.
  for (const auto& t : fixture_tensors()) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(file.contains(t.name));
    const auto& e = file.entry(t.name);
    EXPECT_EQ(e.dtype, t.dtype);
    EXPECT_EQ(e.shape, t.shape);
    const auto raw = file.raw(t.name);
    EXPECT_TRUE(std::equal(raw.begin(), raw.end(), t.data.begin(), t.data.end()));
  }
  EXPECT_EQ(file.size(), fixture_tensors().size());
  EXPECT_EQ(file.metadata(), kFixtureMetadata);

  // And the values decode as intended.
  const auto f32 = file.to_f32("f32", {2, 3});
  EXPECT_EQ(f32[2], 1.0f / 3.0f);
  EXPECT_EQ(f32[3], std::numeric_limits<float>::max());
  EXPECT_EQ(f32[4], std::numeric_limits<float>::denorm_min());
  EXPECT_TRUE(std::signbit(f32[5]));
  const auto special = file.to_f32("f32_special");
  EXPECT_EQ(special[0], kInf);
  EXPECT_EQ(special[1], -kInf);
  EXPECT_TRUE(std::isnan(special[2]));
  const auto f16 = file.to_f32("f16");
  const std::vector<float> f16_want = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0x1p-14f, 0x1p-24f,
                                       0.0999755859375f, kInf, kNaN};
  ASSERT_EQ(f16.size(), f16_want.size());
  for (std::size_t i = 0; i < f16.size(); ++i) {
    if (std::isnan(f16_want[i])) {
      EXPECT_TRUE(std::isnan(f16[i]));
    } else {
      EXPECT_TRUE(same_bits(f16[i], f16_want[i])) << i << ": " << f16[i];
    }
  }
  const auto bf16 = file.to_f32("bf16");
  EXPECT_EQ(bf16, (std::vector<float>{1.0f, 3.140625f,
                                      vkrnn::bf16_to_float(vkrnn::float_to_bf16(-1e30f)), 1.0f,
                                      1.015625f}));
  EXPECT_EQ(file.to_f32("f64"), (std::vector<float>{1.0f / 3.0f, kInf, -2.0f}));
  EXPECT_EQ(file.to_i64("i64"), (std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(),
                                                           std::numeric_limits<std::int64_t>::max(), 0, -1}));
  EXPECT_EQ(file.to_i64("i32"), (std::vector<std::int64_t>{-2147483648LL, 2147483647, 7, -7}));
  EXPECT_EQ(file.to_i64("i16"), (std::vector<std::int64_t>{-32768, 32767, 1}));
  EXPECT_EQ(file.to_i64("i8"), (std::vector<std::int64_t>{-128, 127, 0}));
  EXPECT_EQ(file.to_i64("u8"), (std::vector<std::int64_t>{0, 1, 128, 255}));
  EXPECT_EQ(file.to_i64("bool"), (std::vector<std::int64_t>{1, 0, 1}));
  EXPECT_EQ(file.to_f32("scalar", {}), std::vector<float>{42.5f});
  EXPECT_TRUE(file.to_f32("empty", {0, 3}).empty());
  EXPECT_EQ(file.to_f32(kUnicodeName, {1}), std::vector<float>{7.0f});
}

TEST(SafetensorsPython, FileWrittenHereLoadsInPython) {
  if (!python_has_numpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy (scripts/install-deps.sh installs it)";
  TempDir dir;
  const std::string path = dir.file("from_cpp.safetensors");
  vkrnn::write_safetensors(path, fixture_tensors(), kFixtureMetadata);
  const std::string cmd = "/usr/bin/python3 '" + tool_path() + "' --selftest-read '" + path + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd << " (its stderr lists the differences)";
}

TEST(SafetensorsPython, PythonReaderRejectsMalformedFiles) {
  if (!python_has_numpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy (scripts/install-deps.sh installs it)";
  struct Case {
    std::string header;
    std::size_t data_bytes;
    std::optional<std::uint64_t> header_len;
  };
  const std::vector<Case> cases = {
      {"", 0, {}},
      {"{}", 0, 3},
      {"{}", 0, std::numeric_limits<std::uint64_t>::max()},
      {"{", 0, {}},
      {std::string("{}\0", 3), 0, {}},
      {"{\"a\":NaN}", 0, {}},
      {"{\"w\xff\":{}}", 0, {}},
      {"[]", 0, {}},
      {"{\"w\":" + std::string(5000, '[') + std::string(5000, ']') + "}", 0, {}},
      {R"({"w":5})", 0, {}},
      {R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, {}},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, {}},
      {R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}})", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[0,18446744073709551615,2],"data_offsets":[0,0]}})", 0, {}},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}})", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[true,1]}})", 1, {}},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, {}},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7, {}},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, {}},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, {}},
      {"{}", 1, {}},
      {R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, {}},
      {R"({"w":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, {}},
      {R"({"__metadata__":{"k":1}})", 0, {}},
      {R"({"__metadata__":[]})", 0, {}},
      {R"({"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0, {}},
      {R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", 2, {}},  // data bytes 1, 8
  };
  TempDir dir;
  std::string cmd = "/usr/bin/python3 '" + tool_path() + "' --expect-invalid";
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto bytes = make_file(cases[i].header, cases[i].data_bytes, cases[i].header_len);
    // The C++ reader rejects each as well (BOOL only when read as integers).
    EXPECT_ANY_THROW(SafetensorsFile::parse(bytes, "mem://case").to_i64("m")) << "case " << i;
    const std::string path = dir.file("bad" + std::to_string(i) + ".safetensors");
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                std::streamsize(bytes.size()));
    cmd += " '" + path + "'";
  }
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "its stderr names the files it accepted";
}
