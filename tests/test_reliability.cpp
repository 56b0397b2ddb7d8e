// Untrusted model files (SECURITY.md): whatever a model directory holds, loading it either
// succeeds or throws vkrnn::Error naming the file and what was wrong -- never another exception
// type, never a hang, never an allocation the file's size does not justify.
//  - every failure kind of the JSON parser (syntax, numbers beyond a double, invalid UTF-8, NUL,
//    nesting, size) in model.json, safetensors headers and vocabularies;
//  - every field of model.json replaced by every kind of JSON value;
//  - the last-resort conversion of each exception type a third-party call can throw;
//  - files that are not regular files (FIFO, /dev/zero), huge and sparse files, hostile headers
//    of many tiny tensors, files that shrink after open;
//  - model.json rules: duplicate keys, shared special-token ids, limits.
// None of these needs a device.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <typeinfo>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "expect_error.hpp"
#include "io/untrusted.hpp"
#include "test_models_tiny.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/safetensors.hpp"

namespace vkrnn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::TempDir;
using test::TinyClassifier;
using test::TinyModel;

// Runs fn; true if it returned or threw vkrnn::Error, false (with a failure naming `what`) if any
// other exception escaped.
bool only_error(const std::function<void()>& fn, const std::string& what) {
  try {
    fn();
  } catch (const Error&) {
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": " << typeid(e).name() << " escaped: " << e.what();
    return false;
  } catch (...) {
    ADD_FAILURE() << what << ": a non-std exception escaped";
    return false;
  }
  return true;
}

// The raw text of model.json with `placeholder` (a JSON string in the dump) replaced by `raw`:
// lets a test put text no json value can hold (-1e400) into any field.
std::string with_raw(const json& config, const std::string& placeholder, const std::string& raw) {
  std::string text = config.dump(1);
  const std::string quoted = "\"" + placeholder + "\"";
  const auto at = text.find(quoted);
  EXPECT_NE(at, std::string::npos);
  return text.replace(at, quoted.size(), raw);
}

// A safetensors file of `header` (padded to 8 bytes) and no data.
std::vector<std::byte> safetensors_of(std::string header) {
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<std::byte> bytes(8 + header.size());
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = std::byte((header.size() >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Issue 18: every failure of the JSON parser is a vkrnn::Error naming the file and where.

TEST(UntrustedJson, ModelJsonParserFailuresAreErrorsWithPosition) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  const std::string file = (dir.path() / "model.json").string();
  json cfg = m.config;
  cfg["embedding_dim"] = "@@";
  struct Case {
    std::string name, raw;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      // nlohmann::detail::out_of_range 406 (the issue's reproducer)
      {"negative overflow", "-1e400", {"number overflow", "-1e400", "line 11, column"}},
      {"positive overflow", "1e400", {"number overflow", "1e400"}},
      // nlohmann::detail::parse_error 101
      {"syntax", "[1,,2]", {"syntax error", "line 11, column"}},
      {"lone surrogate", "\"\\ud800\"", {"surrogate", "line 11"}},
      {"bad escape", "\"\\x41\"", {"invalid string", "line 11"}},
      {"invalid UTF-8", "\"\xc3\x28\"", {"UTF-8", "line 11"}},
      {"control character", "\"a\tb\"", {"control character", "line 11"}},
      {"NaN literal", "NaN", {"syntax error", "line 11"}},
      {"NUL byte", std::string("1\0", 2), {"NUL byte at byte", "line 11"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TinyModel::write_config(dir.path(), with_raw(cfg, "@@", c.raw));
    std::vector<std::string> fragments = c.fragments;
    fragments.push_back(file);
    fragments.push_back("invalid JSON");
    test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, fragments);
  }
}

TEST(UntrustedJson, SafetensorsHeaderParserFailuresAreErrors) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w":{"dtype":"F32","shape":[-1e400],"data_offsets":[0,0]}})", "number overflow"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}})", "number overflow"},
      {R"({"w":{"dtype":"F32","shape":[1e300],"data_offsets":[0,0]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]}})", "shape"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", "data_offsets"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},})", "syntax error"},
      {"{\"w\xff\":1}", "UTF-8"},
      {R"({"__metadata__":{"k":"\udc00"}})", "surrogate"},
      {R"({"__metadata__":{"k":1e400}})", "number overflow"},
  };
  for (const auto& c : cases) {
    const std::string& header = c.first;
    const std::string& fragment = c.second;
    SCOPED_TRACE(header);
    test::expect_error([&] { SafetensorsFile::parse(safetensors_of(header), "mem://h"); }, ErrorCode::format,
                       {"mem://h", fragment});
  }
}

TEST(UntrustedJson, VocabularyParserFailuresAreErrors) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  json cfg = m.config;
  cfg["src_vocab"][4] = "@@";
  for (const std::string raw : {"\"\xff\"", "\"\\ud83d\"", "-1e400", "\"\xed\xa0\x80\""}) {
    SCOPED_TRACE(raw);
    TinyModel::write_config(dir.path(), with_raw(cfg, "@@", raw));
    test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, {"model.json", "invalid JSON at byte"});
  }
  // Well-formed JSON of the wrong kind inside a vocabulary: named by field and entry.
  for (const json& bad : {json(nullptr), json(4), json(-1), json(1.5), json::array(), json::object(), json(true)}) {
    json c = m.config;
    c["tgt_vocab"][4] = bad;
    TinyModel::write_config(dir.path(), c.dump());
    test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, {"field 'tgt_vocab'", "entry 4"});
  }
}

// Every field (at every depth) replaced by every kind of JSON value, and by numbers no double
// holds: the load either succeeds (some fields take anything, e.g. "extra") or throws
// vkrnn::Error. Catches a get<T>() on the wrong kind (nlohmann::type_error) anywhere.
void every_field_every_kind(const json& config, const std::function<void(const fs::path&)>& write_weights) {
  TempDir dir;
  write_weights(dir.path());
  std::vector<json::json_pointer> paths;
  std::function<void(const json&, const json::json_pointer&)> walk = [&](const json& j, const json::json_pointer& p) {
    if (!p.empty()) paths.push_back(p);
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) walk(v, p / k);
    } else if (j.is_array()) {
      for (std::size_t i = 0; i < std::min<std::size_t>(j.size(), 2); ++i) walk(j[i], p / i);
    }
  };
  walk(config, json::json_pointer());
  const std::vector<json> values = {nullptr, true, false, -1, 0, 1, 63, 64, 4097, 1.5, -0.0, 1e308,
                                    std::numeric_limits<std::uint64_t>::max(), std::numeric_limits<std::int64_t>::min(),
                                    "", "x", "gru", json::array(), json::array({1}), json::object(),
                                    json::object({{"a", 1}})};
  const std::vector<std::string> raws = {"-1e400", "1e400", "18446744073709551616", "-9223372036854775809"};
  std::size_t loads = 0, errors = 0;
  for (const auto& p : paths) {
    auto run = [&](const std::string& text, const std::string& what) {
      TinyModel::write_config(dir.path(), text);
      ++loads;
      bool threw = false;
      EXPECT_TRUE(only_error([&] {
        try {
          ModelFile::load(dir.str());
        } catch (const Error&) {
          threw = true;
          throw;
        }
      }, p.to_string() + " = " + what));
      errors += threw;
    };
    for (const json& v : values) {
      json c = config;
      c[p] = v;
      run(c.dump(), v.dump());
    }
    for (const std::string& raw : raws) {
      json c = config;
      c[p] = "@@";
      run(with_raw(c, "@@", raw), raw);
    }
    json removed = config;
    if (json& parent = removed[p.parent_pointer()]; parent.is_object()) {
      parent.erase(p.back());
      run(removed.dump(), "(removed)");
    }
  }
  EXPECT_GT(loads, 500u);
  EXPECT_GT(errors, loads / 2) << "most replacements must be refused";
}

TEST(UntrustedJson, EveryFieldEveryKindSeq2Seq) {
  TinyModel m;
  every_field_every_kind(m.config, [&](const fs::path& dir) { m.write(dir); });
}

TEST(UntrustedJson, EveryFieldEveryKindClassifier) {
  TinyClassifier m;
  every_field_every_kind(m.config, [&](const fs::path& dir) { m.write(dir); });
}

// The last resort: each exception type a third-party call can throw becomes vkrnn::Error.
TEST(UntrustedJson, EachForeignExceptionKindBecomesError) {
  const std::vector<std::pair<std::string, std::function<void()>>> throwers = {
      {"nlohmann parse_error", [] { json j = json::parse("{"); }},
       {"nlohmann type_error", [] { (void)json(1).get<std::string>(); }},
       {"nlohmann out_of_range", [] { (void)json::array().at(5); }},
       {"nlohmann invalid_iterator", [] {
          json a = json::array({1}), b = json::array({2});
          a.erase(b.begin());
        }},
       {"nlohmann other_error", [] { (void)json(1).patch(json::parse(R"([{"op":"test","path":"","value":2}])")); }},
       {"std::bad_alloc", [] { throw std::bad_alloc(); }},
       {"std::length_error", [] { std::vector<int> v; v.reserve(v.max_size() + 1); }},
       {"std::out_of_range (stoi)", [] { (void)std::stoi("99999999999999999999"); }},
       {"std::invalid_argument (stoul)", [] { (void)std::stoul("x"); }},
       {"std::filesystem_error", [] { (void)fs::file_size("/nonexistent/vkrnn"); }},
       {"not a std::exception", [] { throw 42; }},
  };
  for (const auto& t : throwers) {
    const std::string& name = t.first;
    const std::function<void()>& fn = t.second;
    SCOPED_TRACE(name);
    try {
      io_detail::only_vkrnn_errors("origin.json", [&] {
        fn();
        return 0;
      });
      ADD_FAILURE() << "nothing thrown";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("origin.json"), std::string::npos) << e.what();
      const bool memory = name == "std::bad_alloc" || name == "std::length_error";
      EXPECT_EQ(e.code(), memory ? ErrorCode::out_of_range : ErrorCode::format) << e.what();
    }
  }
  // A vkrnn::Error passes unchanged.
  test::expect_error([] { io_detail::only_vkrnn_errors("x", []() -> int { throw Error(ErrorCode::io, "kept"); }); },
                     ErrorCode::io, {"kept"});
}

// ---------------------------------------------------------------------------------------------
// Issue 19, item 3: model directories that would hang or exhaust memory.

// Runs ModelFile::load(dir) on another thread; fails (and unblocks `fifo`, if given) when it
// has not returned within a minute instead of hanging the suite.
void expect_prompt_error(const std::string& dir, ErrorCode code, const std::vector<std::string>& fragments,
                         const std::string& fifo = "") {
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      ModelFile::load(dir);
      return "loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << f << " not in " << e.what();
      return "";
    }
  });
  if (result.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "ModelFile::load(" << dir << ") blocked";
    if (!fifo.empty()) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // releases a reader blocked in open()
      if (fd >= 0) ::close(fd);
    }
  }
  EXPECT_EQ(result.get(), "");
}

// A TinyModel in dir with `which` of its files removed; returns that file's path.
fs::path model_without(const TempDir& dir, const char* which) {
  TinyModel().write(dir.path());
  const fs::path p = dir.path() / which;
  fs::remove(p);
  return p;
}

TEST(UntrustedFiles, FifoIsRefusedWithoutBlocking) {
  for (const char* which : {"model.json", "model.safetensors"}) {
    SCOPED_TRACE(which);
    TempDir dir;
    const fs::path p = model_without(dir, which);
    ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
    expect_prompt_error(dir.str(), ErrorCode::io, {p.string(), "FIFO", "regular file"}, p.string());
  }
}

TEST(UntrustedFiles, DeviceSymlinkIsRefused) {
  for (const char* which : {"model.json", "model.safetensors"}) {
    SCOPED_TRACE(which);
    TempDir dir;
    fs::create_symlink("/dev/zero", model_without(dir, which));
    expect_prompt_error(dir.str(), ErrorCode::io, {which, "character device"});
  }
  // A symlink to a regular file is fine (model directories are often assembled that way).
  TempDir dir, elsewhere;
  TinyModel m;
  m.write(elsewhere.path());
  fs::create_symlink(elsewhere.path() / "model.json", dir.path() / "model.json");
  fs::create_symlink(elsewhere.path() / "model.safetensors", dir.path() / "model.safetensors");
  EXPECT_NO_THROW(ModelFile::load(dir.str()));
}

// A sparse file of the given size (no disk blocks).
void make_sparse(const fs::path& p, std::uint64_t bytes) {
  { std::ofstream(p, std::ios::binary | std::ios::trunc); }
  fs::resize_file(p, bytes);
}

TEST(UntrustedFiles, HugeModelJsonIsRefusedBySize) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  // 1 GiB (sparse): refused after reading the limit plus one byte, whatever stat says.
  make_sparse(dir.path() / "model.json", 1ull << 30);
  expect_prompt_error(dir.str(), ErrorCode::format,
                      {"model.json", fmt::format("more than {} bytes", model_limits::max_config_bytes)});
  // Just under the byte limit, but millions of values: refused while parsing, when the count
  // passes the limit (the DOM stays small).
  std::string many = "[";
  while (many.size() + 2 < model_limits::max_config_bytes - 16) many += "0,";
  many += "0]";
  TinyModel::write_config(dir.path(), many);
  expect_prompt_error(dir.str(), ErrorCode::format,
                      {"model.json", fmt::format("more than {} JSON values", model_limits::max_config_values)});
}

// A safetensors file whose header declares `tensors` (name -> shape, F32) and whose data is a
// hole of the right size.
void write_sparse_safetensors(const fs::path& p, const std::vector<std::pair<std::string, std::vector<std::uint64_t>>>& tensors) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    std::uint64_t n = 4;
    for (auto d : shape) n *= d;
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  const std::vector<std::byte> bytes = safetensors_of(header.dump());
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  fs::resize_file(p, bytes.size() + offset);
}

TEST(UntrustedFiles, SparseHugeWeightsAreRefusedBeforeReading) {
  // A model whose config implies ~15 GiB of weights, with a weights file that matches (sparse):
  // refused by the total before a byte of data is read or allocated.
  TempDir dir;
  TinyModel m;
  const std::size_t E = std::size_t(1) << 26;
  m.config["embedding_dim"] = E;
  m.write(dir.path());
  const auto& c = m.config;
  const std::size_t Vs = c["src_vocab_size"], Vt = c["tgt_vocab_size"], He = c["encoder_hidden"],
                    Hd = c["decoder_hidden"], A = c["attention_dim"], M = 2 * He, G = 3;
  std::vector<std::pair<std::string, std::vector<std::uint64_t>>> t = {
      {"src_embedding.weight", {Vs, E}},       {"tgt_embedding.weight", {Vt, E}},
      {"bridge.weight", {Hd, He}},             {"bridge.bias", {Hd}},
      {"attention.key_proj.weight", {A, M}},   {"attention.query_proj.weight", {A, Hd}},
      {"attention.query_proj.bias", {A}},      {"attention.v", {A}},
      {"output.weight", {Vt, Hd + M + E}},     {"output.bias", {Vt}},
      {"decoder.weight_ih_l0", {G * Hd, E + M}}, {"decoder.weight_hh_l0", {G * Hd, Hd}},
      {"decoder.bias_ih_l0", {G * Hd}},        {"decoder.bias_hh_l0", {G * Hd}}};
  for (const char* d : {"l0", "l0_reverse"}) {
    t.push_back({fmt::format("encoder.weight_ih_{}", d), {G * He, E}});
    t.push_back({fmt::format("encoder.weight_hh_{}", d), {G * He, He}});
    t.push_back({fmt::format("encoder.bias_ih_{}", d), {G * He}});
    t.push_back({fmt::format("encoder.bias_hh_{}", d), {G * He}});
  }
  write_sparse_safetensors(dir.path() / "model.safetensors", t);
  EXPECT_GT(fs::file_size(dir.path() / "model.safetensors"), 10ull << 30);
  expect_prompt_error(dir.str(), ErrorCode::format,
                      {"model.safetensors", fmt::format("{} byte limit", model_limits::max_weight_bytes)});

  // The reader alone opens such a file (it reads the header only) and refuses to read a tensor
  // beyond its per-read limit, before allocating.
  write_sparse_safetensors(dir.path() / "big.safetensors", {{"huge", {std::uint64_t(30) << 28}}});  // 30 GiB
  const SafetensorsFile f = SafetensorsFile::open((dir.path() / "big.safetensors").string());
  test::expect_error([&] { f.to_f32("huge"); }, ErrorCode::out_of_range, {"'huge'", "limit"});
  test::expect_error([&] { f.raw("huge"); }, ErrorCode::out_of_range, {"'huge'", "limit"});
}

TEST(UntrustedFiles, HeadersOfManyTinyTensorsAreRefused) {
  auto header_of = [](std::size_t n) {
    std::string h = "{";
    for (std::size_t i = 0; i < n; ++i) h += fmt::format("{}\"t{}\":{{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", i ? "," : "", i);
    return safetensors_of(h + "}");
  };
  EXPECT_EQ(SafetensorsFile::parse(header_of(1000), "mem://ok").size(), 1000u);
  test::expect_error([&] { SafetensorsFile::parse(header_of(safetensors_limits::max_tensors + 1), "mem://count"); },
                     ErrorCode::format, {"mem://count", fmt::format("more than the {}", safetensors_limits::max_tensors)});
  // The issue's 1.7 M entries: refused by the value count long before the DOM is whole.
  test::expect_error([&] { SafetensorsFile::parse(header_of(200000), "mem://values"); }, ErrorCode::format,
                     {"mem://values", "JSON values"});
}

TEST(UntrustedFiles, WeightsThatShrinkAfterOpenAreAnIoError) {
  TempDir dir;
  const fs::path p = dir.path() / "w.safetensors";
  write_safetensors(p.string(), {f32_tensor("a", {4}, std::vector<float>{1, 2, 3, 4}),
                                 f32_tensor("b", {4}, std::vector<float>{5, 6, 7, 8})});
  const SafetensorsFile f = SafetensorsFile::open(p.string());
  EXPECT_EQ(f.to_f32("a"), (std::vector<float>{1, 2, 3, 4}));
  fs::resize_file(p, fs::file_size(p) - 8);
  test::expect_error([&] { f.to_f32("b"); }, ErrorCode::io, {p.string(), "did it change?"});
}

// ---------------------------------------------------------------------------------------------
// Issue 19, item 5 (and limits): what model.json may not say.

void expect_config_text_error(const std::string& text, const std::vector<std::string>& fragments) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  TinyModel::write_config(dir.path(), text);
  std::vector<std::string> all = fragments;
  all.push_back("model.json");
  test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, all);
}

TEST(ModelConfigRules, DuplicateKeysAreRefused) {
  const std::string text = TinyModel().config.dump();
  auto insert_after = [&](const std::string& anchor, const std::string& what) {
    std::string t = text;
    const auto at = t.find(anchor);
    EXPECT_NE(at, std::string::npos) << anchor;
    return t.insert(at + anchor.size(), what);
  };
  // Top level (the last one would silently win in nlohmann's own parser).
  expect_config_text_error(insert_after("{", R"("cell":"lstm",)"), {"duplicate field 'cell'"});
  expect_config_text_error(insert_after(R"("special_tokens":{)", R"("eos":3,)"),
                           {"duplicate key 'eos'", "in field 'special_tokens'"});
  expect_config_text_error(insert_after(R"("encoder":{)", R"("weight_ih_l0":"x",)"),
                           {"duplicate key 'weight_ih_l0'", "in field 'tensors.encoder'"});
  // The same key spelled with an escape is the same key.
  expect_config_text_error(insert_after("{", R"("\u0063ell":"gru",)"), {"duplicate field 'cell'"});
}

TEST(ModelConfigRules, SpecialTokensNeedTheirOwnIds) {
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"pad", "bos"}, {"pad", "eos"}, {"pad", "unk"}, {"bos", "eos"}, {"bos", "unk"}, {"eos", "unk"}}) {
    TinyModel m;
    m.config["special_tokens"][b] = m.config["special_tokens"][a];
    expect_config_text_error(m.config.dump(), {"special_tokens", fmt::format("'{}' and '{}'", a, b), "own id"});
  }
  TinyModel all_same;
  for (const char* k : {"pad", "bos", "eos", "unk"}) all_same.config["special_tokens"][k] = 0;
  expect_config_text_error(all_same.config.dump(), {"'pad' and 'bos' are both id 0"});
  // Classifiers: pad and unk.
  TempDir dir;
  TinyClassifier c;
  c.config["special_tokens"]["unk"] = 0;
  c.write(dir.path());
  test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, {"'pad' and 'unk' are both id 0"});
}

TEST(ModelConfigRules, LimitsOfARealModel) {
  auto limit = [](const std::string& field, json value, std::uint64_t max) {
    TinyModel m;
    json::json_pointer p(field);
    m.config[p] = std::move(value);
    expect_config_text_error(m.config.dump(), {fmt::format("field '{}'", p.back()), fmt::format(", {}]", max)});
  };
  limit("/encoder_layers", model_limits::max_layers + 1, model_limits::max_layers);
  limit("/max_decode_length", model_limits::max_decode_length + 1, model_limits::max_decode_length);
  limit("/beam/width", 64, 63);
  limit("/src_vocab_size", model_limits::max_vocab + 1, model_limits::max_vocab);
  limit("/embedding_dim", model_limits::max_dimension + 1, model_limits::max_dimension);
}

// ---------------------------------------------------------------------------------------------
// Issue 17: the documented error codes when Vulkan is missing (docs/runtime.md, device.hpp).
// Each case runs in a child process (the loader is loaded once per process); the child exits
// with the ErrorCode (std::_Exit: no leak check of the child's half-built state).

[[noreturn]] void exit_with_code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", to_string(e.code()), e.what());
    std::_Exit(static_cast<int>(e.code()));
  } catch (...) {
    std::_Exit(100);
  }
  std::_Exit(101);
}

TEST(Diagnostics, NoDriverIsNoDevice) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto no_driver = [](const std::function<void()>& fn) {
    ::setenv("VK_DRIVER_FILES", "/nonexistent/vkrnn-no-driver.json", 1);
    ::setenv("VK_ICD_FILENAMES", "/nonexistent/vkrnn-no-driver.json", 1);
    exit_with_code_of(fn);
  };
  EXPECT_EXIT(no_driver([] { (void)list_devices(); }), ::testing::ExitedWithCode(static_cast<int>(ErrorCode::no_device)),
              "no_device: no Vulkan driver found .*mesa-vulkan-drivers");
  EXPECT_EXIT(no_driver([] { Context ctx; }), ::testing::ExitedWithCode(static_cast<int>(ErrorCode::no_device)),
              "no_device: no Vulkan driver found");
}

TEST(Diagnostics, NoLoaderIsNoLoader) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::setenv("VKRNN_VULKAN_LIBRARY", "/nonexistent/libvulkan.so.1", 1);
        exit_with_code_of([] { Context ctx; });
      },
      ::testing::ExitedWithCode(static_cast<int>(ErrorCode::no_loader)),
      "no_loader: no Vulkan loader: could not load '/nonexistent/libvulkan.so.1'");
}

}  // namespace
}  // namespace vkrnn
