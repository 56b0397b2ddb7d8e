// Build-time SPIR-V reflection: reads the kernels compiled from one shader source and writes a
// C++ header describing each one's interface as the SPIR-V declares it -- the push-constant
// block (size, member names, offsets, scalar types), the storage-buffer bindings (every block
// aliased at a binding, and whether all of them are readonly) and the specialization constants
// (id, name, type). src/ops/kernel_interface.hpp static_asserts each op's C++ declaration of a
// kernel against this, so a drift between the two fails the build.
//
//   spirv_reflect OUT.hpp FAMILY NAME=FILE.spv [NAME=FILE.spv ...]
//
// A small walk over the instruction stream (SPIR-V 1.3 from glslangValidator): no dependency
// beyond the C++ standard library.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

enum Op : std::uint32_t {
  OpName = 5, OpMemberName = 6, OpTypeBool = 20, OpTypeInt = 21, OpTypeFloat = 22,
  OpTypeVector = 23, OpTypeMatrix = 24, OpTypeArray = 28, OpTypeRuntimeArray = 29,
  OpTypeImage = 25, OpTypeSampledImage = 27, OpTypeStruct = 30, OpTypePointer = 32, OpConstantTrue = 41, OpConstantFalse = 42,
  OpConstant = 43, OpConstantComposite = 44, OpSpecConstantTrue = 48, OpSpecConstantFalse = 49,
  OpSpecConstant = 50, OpSpecConstantComposite = 51, OpSpecConstantOp = 52, OpVariable = 59,
  OpDecorate = 71, OpMemberDecorate = 72,
};
enum Decoration : std::uint32_t {
  SpecId = 1, NonWritable = 24, Binding = 33, DescriptorSet = 34, Offset = 35,
};
enum StorageClass : std::uint32_t { UniformConstant = 0, Workgroup = 4, Uniform = 2, PushConstant = 9, StorageBuffer = 12 };

struct Type {
  std::uint32_t op = 0;
  std::uint32_t width = 0, is_signed = 0;  // int / float
  std::uint32_t component = 0, count = 0;  // vector, matrix: component type, count; array: element, length id
  std::vector<std::uint32_t> members;      // struct
  std::uint32_t pointee = 0, storage = 0;  // pointer
};

// A constant or specialization constant: what its value is made of.
struct Value {
  std::uint32_t op = 0;                 // OpConstant*, OpSpecConstant*
  std::uint32_t literal = 0;            // OpConstant / OpSpecConstant: the (default) value
  std::uint32_t spec_op = 0;            // OpSpecConstantOp: the operation
  std::vector<std::uint32_t> operands;  // ids (literals for CompositeExtract's indices)
};

struct Module {
  std::map<std::uint32_t, std::string> names;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::string> member_names;
  std::map<std::uint32_t, Type> types;
  std::map<std::uint32_t, std::uint32_t> spec_ids;       // result id -> SpecId
  std::map<std::uint32_t, std::uint32_t> spec_types;     // result id -> type id
  std::map<std::uint32_t, std::uint32_t> bindings, sets;  // variable -> binding / set
  std::set<std::pair<std::uint32_t, std::uint32_t>> member_non_writable;
  std::set<std::uint32_t> non_writable;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> offsets;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> variables;  // (pointer type, id)
  std::map<std::uint32_t, Value> values;
};

std::string literal_string(const std::uint32_t* words, std::size_t count) {
  std::string s;
  for (std::size_t i = 0; i < count; ++i) {
    for (int b = 0; b < 4; ++b) {
      const char c = static_cast<char>((words[i] >> (8 * b)) & 0xff);
      if (c == 0) return s;
      s += c;
    }
  }
  return s;
}

Module parse(const std::vector<std::uint32_t>& w, const std::string& file) {
  if (w.size() < 5 || w[0] != 0x07230203u) throw std::runtime_error(file + ": not SPIR-V");
  Module m;
  for (std::size_t i = 5; i < w.size();) {
    const std::uint32_t n = w[i] >> 16, op = w[i] & 0xffff;
    if (n == 0 || i + n > w.size()) throw std::runtime_error(file + ": truncated instruction");
    const std::uint32_t* a = &w[i + 1];  // operands
    switch (op) {
      case OpName: m.names[a[0]] = literal_string(a + 1, n - 2); break;
      case OpMemberName: m.member_names[{a[0], a[1]}] = literal_string(a + 2, n - 3); break;
      case OpTypeBool: m.types[a[0]] = {op}; break;
      case OpTypeInt: m.types[a[0]] = {op, a[1], a[2]}; break;
      case OpTypeFloat: m.types[a[0]] = {op, a[1]}; break;
      case OpTypeVector: m.types[a[0]] = {op, 0, 0, a[1], a[2]}; break;
      case OpTypeMatrix: m.types[a[0]] = {op, 0, 0, a[1], a[2]}; break;
      case OpTypeArray: m.types[a[0]] = {op, 0, 0, a[1], a[2]}; break;
      case OpTypeRuntimeArray: m.types[a[0]] = {op, 0, 0, a[1]}; break;
      // Image: `count` holds Dim (5: Buffer), `width` Sampled (1: with a sampler, 2: storage).
      case OpTypeImage: m.types[a[0]] = {op, a[6], 0, a[1], a[2]}; break;
      case OpTypeSampledImage: m.types[a[0]] = {op, 0, 0, a[1]}; break;
      case OpTypeStruct: {
        Type t{op};
        t.members.assign(a + 1, a + n - 1);
        m.types[a[0]] = t;
        break;
      }
      case OpTypePointer: {
        Type t{op};
        t.storage = a[1];
        t.pointee = a[2];
        m.types[a[0]] = t;
        break;
      }
      case OpConstantTrue:
      case OpConstantFalse: m.values[a[1]] = {op, op == OpConstantTrue ? 1u : 0u}; break;
      case OpConstant: m.values[a[1]] = {op, a[2]}; break;
      case OpSpecConstantTrue:
      case OpSpecConstantFalse:
      case OpSpecConstant:
        m.spec_types[a[1]] = a[0];
        m.values[a[1]] = {op, op == OpSpecConstant ? a[2] : op == OpSpecConstantTrue ? 1u : 0u};
        break;
      case OpConstantComposite:
      case OpSpecConstantComposite: {
        Value v{op};
        v.operands.assign(a + 2, a + n - 1);
        m.values[a[1]] = v;
        break;
      }
      case OpSpecConstantOp: {
        Value v{op, 0, a[2]};
        v.operands.assign(a + 3, a + n - 1);
        m.values[a[1]] = v;
        break;
      }
      case OpVariable: m.variables.push_back({a[0], a[1]}); break;
      case OpDecorate:
        if (a[1] == SpecId) m.spec_ids[a[0]] = a[2];
        if (a[1] == Binding) m.bindings[a[0]] = a[2];
        if (a[1] == DescriptorSet) m.sets[a[0]] = a[2];
        if (a[1] == NonWritable) m.non_writable.insert(a[0]);
        break;
      case OpMemberDecorate:
        if (a[2] == Offset) m.offsets[{a[0], a[1]}] = a[3];
        if (a[2] == NonWritable) m.member_non_writable.insert({a[0], a[1]});
        break;
      default: break;
    }
    i += n;
  }
  return m;
}

// "u32", "i32", "f32", "bool", "u32x4", ... or "other"; `bytes` gets the size.
std::string scalar(const Module& m, std::uint32_t type, std::uint32_t& bytes) {
  const auto it = m.types.find(type);
  if (it == m.types.end()) return bytes = 0, "other";
  const Type& t = it->second;
  switch (t.op) {
    case OpTypeBool: bytes = 4; return "boolean";
    case OpTypeInt:
      bytes = t.width / 8;
      return std::string(t.is_signed ? "i" : "u").append(std::to_string(t.width));
    case OpTypeFloat: bytes = t.width / 8; return std::string("f").append(std::to_string(t.width));
    case OpTypeVector: {
      std::uint32_t b = 0;
      const std::string s = scalar(m, t.component, b);
      bytes = b * t.count;
      return s + "x" + std::to_string(t.count);
    }
    default: bytes = 0; return "other";
  }
}

// The names src/ops/kernel_reflection.hpp's Scalar knows.
std::string known(std::string s) {
  for (const char* k : {"boolean", "u32", "i32", "f32", "u32x4", "i32x4", "f32x4"}) {
    if (s == k) return s;
  }
  return "other";
}

// A C++ expression (of std::uint32_t) for the value of constant `id` given the specialization
// constants `c` (reflect::spec(c, id, default) in src/ops/kernel_reflection.hpp).
std::string expression(const Module& m, std::uint32_t id) {
  const auto it = m.values.find(id);
  if (it == m.values.end()) throw std::runtime_error("id " + std::to_string(id) + " is not a constant");
  const Value& v = it->second;
  const auto spec_id = m.spec_ids.find(id);
  switch (v.op) {
    case OpConstant:
    case OpConstantTrue:
    case OpConstantFalse: return std::to_string(v.literal) + "u";
    case OpSpecConstant:
    case OpSpecConstantTrue:
    case OpSpecConstantFalse:
      if (spec_id == m.spec_ids.end()) return std::to_string(v.literal) + "u";
      return "spec(c, " + std::to_string(spec_id->second) + ", " + std::to_string(v.literal) + "u)";
    case OpSpecConstantOp: break;
    default: throw std::runtime_error("constant " + std::to_string(id) + ": a composite used as a number");
  }
  const auto& o = v.operands;
  auto e = [&](std::size_t i) { return "(" + expression(m, o.at(i)) + ")"; };
  auto bin = [&](const char* op) { return e(0) + " " + op + " " + e(1); };
  auto cmp = [&](const char* op) { return "(" + bin(op) + " ? 1u : 0u)"; };
  switch (v.spec_op) {
    case 81: {  // OpCompositeExtract of a (spec) constant composite, e.g. gl_WorkGroupSize.x
      const Value& composite = m.values.at(o.at(0));
      return expression(m, composite.operands.at(o.at(1)));
    }
    case 113: return e(0);                 // OpUConvert
    case 128: return bin("+");             // OpIAdd
    case 130: return bin("-");             // OpISub
    case 132: return bin("*");             // OpIMul
    case 134: return bin("/");             // OpUDiv
    case 137: return bin("%");             // OpUMod
    case 164: return cmp("==");            // OpLogicalEqual
    case 165: return cmp("!=");            // OpLogicalNotEqual
    case 166: return cmp("||");            // OpLogicalOr
    case 167: return cmp("&&");            // OpLogicalAnd
    case 168: return "(" + e(0) + " ? 0u : 1u)";  // OpLogicalNot
    case 169: return "(" + e(0) + " ? " + e(1) + " : " + e(2) + ")";  // OpSelect
    case 170: return cmp("==");            // OpIEqual
    case 171: return cmp("!=");            // OpINotEqual
    case 172: return cmp(">");             // OpUGreaterThan
    case 174: return cmp(">=");            // OpUGreaterThanEqual
    case 176: return cmp("<");             // OpULessThan
    case 178: return cmp("<=");            // OpULessThanEqual
    case 194: return bin(">>");            // OpShiftRightLogical
    case 196: return bin("<<");            // OpShiftLeftLogical
    case 197: return bin("|");             // OpBitwiseOr
    case 198: return bin("^");             // OpBitwiseXor
    case 199: return bin("&");             // OpBitwiseAnd
    default:
      throw std::runtime_error("OpSpecConstantOp with opcode " + std::to_string(v.spec_op) +
                               " (add it to cmake/spirv_reflect.cpp)");
  }
}

// Bytes of a shared-memory type, as a C++ expression (tightly packed: what drivers count).
std::string type_bytes(const Module& m, std::uint32_t type) {
  const Type& t = m.types.at(type);
  switch (t.op) {
    case OpTypeBool: return "4u";
    case OpTypeInt:
    case OpTypeFloat: return std::to_string(t.width / 8) + "u";
    case OpTypeVector:
    case OpTypeMatrix: return std::to_string(t.count) + "u * " + type_bytes(m, t.component);
    case OpTypeArray: return "(" + expression(m, t.count) + ") * " + type_bytes(m, t.component);
    case OpTypeStruct: {
      std::string sum = "0u";
      for (auto member : t.members) sum += " + " + type_bytes(m, member);
      return "(" + sum + ")";
    }
    default: throw std::runtime_error("a shared variable of an unexpected type");
  }
}

struct PushMember {
  std::string name, type;
  std::uint32_t offset, bytes;
};
struct BindingInfo {
  std::set<std::string> names;
  bool read_only = true;
  bool texel = false;  // a uniform texel buffer (usamplerBuffer and the like), not a storage buffer
};
struct SpecInfo {
  std::string name, type;
};
struct Kernel {
  std::string name;
  std::uint32_t push_size = 0;
  std::vector<PushMember> push;
  std::map<std::uint32_t, BindingInfo> bindings;
  std::map<std::uint32_t, SpecInfo> constants;
  std::vector<std::string> shared;  // per shared variable: its bytes, a C++ expression
};

Kernel reflect(const std::string& name, const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.size() % 4) throw std::runtime_error(file + ": size is not a multiple of 4");
  std::vector<std::uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), bytes.size());
  const Module m = parse(words, file);

  Kernel k;
  k.name = name;
  for (const auto& [ptr, var] : m.variables) {
    const Type& p = m.types.at(ptr);
    if (p.op != OpTypePointer) continue;
    const std::uint32_t block = p.pointee;
    const Type& bt = m.types.at(block);
    if (p.storage == PushConstant) {
      // Members in declaration order; a nested struct is not used by any kernel.
      for (std::uint32_t i = 0; i < bt.members.size(); ++i) {
        PushMember pm;
        pm.name = m.member_names.count({block, i}) ? m.member_names.at({block, i}) : "";
        pm.offset = m.offsets.at({block, i});
        pm.type = known(scalar(m, bt.members[i], pm.bytes));
        k.push_size = std::max(k.push_size, pm.offset + pm.bytes);
        k.push.push_back(pm);
      }
    } else if (p.storage == Workgroup) {
      k.shared.push_back("std::uint64_t(" + type_bytes(m, block) + ")");
    } else if (p.storage == UniformConstant && bt.op == OpTypeSampledImage) {
      // Uniform texel buffers only: a sampled image of Dim Buffer.
      const Type& image = m.types.at(bt.component);
      if (image.count != 5 || image.width != 1) throw std::runtime_error(file + ": a sampled image that is not a texel buffer");
      if (!m.bindings.count(var)) continue;
      if (m.sets.count(var) && m.sets.at(var) != 0) throw std::runtime_error(file + ": a binding outside descriptor set 0");
      BindingInfo& b = k.bindings[m.bindings.at(var)];
      if (m.names.count(var)) b.names.insert(m.names.at(var));
      b.texel = true;
    } else if (p.storage == StorageBuffer || p.storage == Uniform) {
      if (!m.bindings.count(var)) continue;
      if (m.sets.count(var) && m.sets.at(var) != 0) {
        throw std::runtime_error(file + ": a binding outside descriptor set 0");
      }
      BindingInfo& b = k.bindings[m.bindings.at(var)];
      if (m.names.count(block)) b.names.insert(m.names.at(block));
      bool ro = m.non_writable.count(var) > 0;
      if (!ro && !bt.members.empty()) {
        ro = true;
        for (std::uint32_t i = 0; i < bt.members.size(); ++i) {
          if (!m.member_non_writable.count({block, i})) ro = false;
          if (m.member_names.count({block, i})) b.names.insert(m.member_names.at({block, i}));
        }
      }
      b.read_only = b.read_only && ro;
    }
  }
  for (const auto& [id, spec] : m.spec_ids) {
    std::uint32_t bytes = 0;
    SpecInfo s;
    s.name = m.names.count(id) ? m.names.at(id) : "";
    s.type = m.spec_types.count(id) ? known(scalar(m, m.spec_types.at(id), bytes)) : "other";
    k.constants[spec] = s;
  }
  return k;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string identifier(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: spirv_reflect OUT.hpp FAMILY NAME=FILE.spv [NAME=FILE.spv ...]\n";
    return 2;
  }
  try {
    const std::string out_path = argv[1], family = argv[2];
    std::vector<Kernel> kernels;
    for (int i = 3; i < argc; ++i) {
      const std::string arg = argv[i];
      const auto eq = arg.find('=');
      if (eq == std::string::npos) throw std::runtime_error("expected NAME=FILE.spv, got " + arg);
      kernels.push_back(reflect(arg.substr(0, eq), arg.substr(eq + 1)));
    }
    std::ostringstream o;
    o << "// generated by cmake/spirv_reflect.cpp from the SPIR-V of shaders/" << family
      << ".comp: do not edit\n#pragma once\n#include \"ops/kernel_reflection.hpp\"\n\n"
      << "namespace vkrnn::reflect::" << identifier(family) << " {\n";
    for (std::size_t n = 0; n < kernels.size(); ++n) {
      const Kernel& k = kernels[n];
      const std::string p = "k" + std::to_string(n) + "_";
      o << "// " << k.name << "\n";
      o << "inline constexpr PushMember " << p << "push[] = {";
      for (const auto& m : k.push) {
        o << "{" << quoted(m.name) << ", " << m.offset << ", " << m.bytes << ", Scalar::" << m.type
          << "}, ";
      }
      if (k.push.empty()) o << "{\"\", 0, 0, Scalar::none}";
      o << "};\n";
      o << "inline constexpr BindingInfo " << p << "bindings[] = {";
      for (const auto& [index, b] : k.bindings) {
        std::string names;
        for (const auto& s : b.names) names.append(names.empty() ? "" : " ").append(s);
        o << "{" << index << ", " << quoted(names) << ", " << (b.read_only ? "true" : "false") << ", "
          << (b.texel ? "true" : "false") << "}, ";
      }
      if (k.bindings.empty()) o << "{0, \"\", false, false}";
      o << "};\n";
      o << "inline constexpr SpecInfo " << p << "constants[] = {";
      for (const auto& [id, s] : k.constants) {
        o << "{" << id << ", " << quoted(s.name) << ", Scalar::" << s.type << "}, ";
      }
      if (k.constants.empty()) o << "{0, \"\", Scalar::none}";
      o << "};\n";
      o << "constexpr std::uint64_t " << p << "shared_bytes([[maybe_unused]] std::span<const std::uint32_t> c) {\n"
        << "  return 0";
      for (const auto& e : k.shared) o << "\n      + " << e;
      o << ";\n}\n";
    }
    o << "inline constexpr KernelInfo kernels[] = {\n";
    for (std::size_t n = 0; n < kernels.size(); ++n) {
      const Kernel& k = kernels[n];
      const std::string p = "k" + std::to_string(n) + "_";
      o << "  {" << quoted(k.name) << ", " << k.push_size << ", "
        << "std::span(" << p << "push, " << k.push.size() << "), "
        << "std::span(" << p << "bindings, " << k.bindings.size() << "), "
        << "std::span(" << p << "constants, " << k.constants.size() << "), " << p
        << "shared_bytes},\n";
    }
    o << "};\n}  // namespace vkrnn::reflect::" << identifier(family) << "\n";
    // Rewrite only on change: every op that includes the header would recompile otherwise.
    std::string old;
    {
      std::ifstream in(out_path);
      if (in) old.assign((std::istreambuf_iterator<char>(in)), {});
    }
    if (old != o.str()) {
      std::ofstream out(out_path, std::ios::trunc);
      out << o.str();
      if (!out) throw std::runtime_error("cannot write " + out_path);
    }
  } catch (const std::exception& e) {
    std::cerr << "spirv_reflect: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
