#pragma once
// What the library's own kernels may reach inside a Sequence: the gate table, for a kernel that
// does close_gate_when_all()'s check itself at the end of its own work (beam_step.comp), which
// saves the check's dispatch.
#include <cstdint>

#include "vkrnn/sequence.hpp"

namespace vkrnn::detail {

struct SequenceAccess {
  // The gate table, to bind read_write to a dispatch inside the gate region: zeroing its first
  // gate_words() u32 closes the gate; the u32 after them counts the checks that found it open
  // (Sequence::open_gate_checks). Error(state) outside begin_gate() .. end_gate().
  static Tensor gate_table(Sequence& seq);
  static std::uint32_t gate_words();
};

}  // namespace vkrnn::detail
