#pragma once
// A Sequence records dispatches and copies into one command buffer and submits them together.
// It tracks every buffer it touches and inserts a pipeline barrier only where a hazard exists
// (read-after-write, write-after-write, write-after-read), so callers never write barriers.
// It keeps every tensor it uses alive until the work is done.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <vulkan/vulkan.h>

#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

enum class Access : std::uint8_t { read, write, read_write };

struct Arg {
  Tensor tensor;
  Access access;
};
inline Arg in(const Tensor& t) { return {t, Access::read}; }
inline Arg out(const Tensor& t) { return {t, Access::write}; }
inline Arg inout(const Tensor& t) { return {t, Access::read_write}; }

struct SequenceOptions {
  bool profile = false;              // GPU timestamps around every dispatch
  std::uint32_t max_timed_dispatches = 4096;
  // Shown in errors; with debug labels on (Context::features().debug_labels) it names the
  // command buffer and a label region around the sequence's work, inside which every dispatch
  // is labelled with its kernel's name (RenderDoc / Nsight captures).
  std::string label;
};

struct SequenceStats {
  std::uint32_t dispatches = 0;
  std::uint32_t barriers = 0;        // pipeline barriers recorded (hazards found)
  std::uint32_t copies = 0;          // buffer copies and fills
  std::uint32_t submissions = 0;     // vkQueueSubmit calls so far
  std::uint32_t gated_dispatches = 0;  // of `dispatches`: recorded inside a gate (may run empty)
  std::uint32_t recordings = 0;      // record_into() calls so far
  std::uint32_t debug_labels = 0;    // debug-utils label regions per recording (0 when off)
};

struct DispatchTiming {
  std::string kernel;
  double gpu_ns = 0.0;
};

// Semaphores to wait on / signal when a game interleaves vkrnn work with its own. Binary
// semaphores always; timeline semaphores (Vulkan 1.2 or VK_KHR_timeline_semaphore, enabled:
// Context::features().timeline_semaphore) with one value per semaphore in wait_values /
// signal_values (the value of a binary semaphore in the same list is ignored). Leave both
// value lists empty when every semaphore is binary.
struct SubmitSync {
  std::vector<VkSemaphore> wait;
  std::vector<VkPipelineStageFlags> wait_stages;  // one per wait semaphore
  std::vector<VkSemaphore> signal;
  std::vector<std::uint64_t> wait_values;    // empty, or one per wait semaphore
  std::vector<std::uint64_t> signal_values;  // empty, or one per signal semaphore
};

// A value of a timeline semaphore: where the app's submission of work recorded with
// Sequence::record_into() signals completion.
struct TimelinePoint {
  VkSemaphore semaphore = VK_NULL_HANDLE;
  std::uint64_t value = 0;
};

using Groups = std::array<std::uint32_t, 3>;

namespace detail {
struct SequenceImpl;
struct ContextImpl;
struct SequenceAccess;  // the library's kernels that close a gate themselves (src/vk/sequence_access.hpp)
}

class VKRNN_API Sequence {
 public:
  Sequence(std::shared_ptr<detail::ContextImpl> ctx, const SequenceOptions& options);
  Sequence(Sequence&&) noexcept;
  Sequence& operator=(Sequence&&) noexcept;
  // Waits for in-flight work (its own fence, or the TimelinePoint of record_into): memory is
  // never freed under the GPU.
  ~Sequence();

  // --- recording -------------------------------------------------------------------
  Sequence& dispatch(const Kernel& kernel, std::span<const Arg> args,
                     std::span<const std::byte> push, Groups groups);
  Sequence& dispatch(const Kernel& kernel, std::initializer_list<Arg> args,
                     std::span<const std::byte> push, Groups groups) {
    return dispatch(kernel, std::span<const Arg>(args.begin(), args.size()), push, groups);
  }
  // A push-constant struct by value. Byte spans take the overload above: without the
  // constraint a span would be pushed as its own (pointer, size) bytes.
  template <class Push>
    requires(std::is_trivially_copyable_v<Push> &&
             !std::is_convertible_v<const Push&, std::span<const std::byte>>)
  Sequence& dispatch(const Kernel& kernel, std::initializer_list<Arg> args, const Push& push,
                     Groups groups) {
    return dispatch(kernel, args, std::as_bytes(std::span<const Push>(&push, 1)), groups);
  }
  // Workgroup counts read from `indirect` (3 x u32 at byte `offset`) when the GPU gets there.
  Sequence& dispatch_indirect(const Kernel& kernel, std::span<const Arg> args,
                              std::span<const std::byte> push, const Tensor& indirect,
                              std::size_t offset = 0);

  // --- GPU-side early exit ----------------------------------------------------------
  // Work the GPU skips once a condition holds, decided on the GPU, never waited for by the host
  // (a whole decode loop recorded up to max_len steps stops doing work when every row is done).
  // Between begin_gate() and end_gate(), every dispatch is recorded as an indirect dispatch
  // whose workgroup counts the GPU reads from a small table this sequence owns (filled with the
  // recorded counts when the sequence starts). close_gate_when_all(flags) records a check that
  // zeroes the table once every u32 of `flags` is non-zero: each gated dispatch after it runs no
  // workgroups (it still costs the driver's per-dispatch overhead, not its work). Once closed, a
  // gate stays closed for the rest of the submission. Transfers (upload, copy, fill, download)
  // are never gated. One gate region per recording; at most max_gate_grids distinct workgroup
  // grids inside it (Error(out_of_range) beyond).
  static constexpr std::size_t max_gate_grids = 1024;
  Sequence& begin_gate();
  Sequence& close_gate_when_all(const Tensor& flags);
  Sequence& end_gate();
  bool gate_open() const;  // recording inside begin_gate() .. end_gate()
  bool has_gate() const;   // begin_gate() was recorded (a second one would be refused)
  // After the sequence finished: how many close_gate_when_all() checks found a flag still unset
  // (a decode loop with one check per step ran 1 + this many steps).
  std::uint32_t open_gate_checks() const;

  // Copies `data` now (into sequence-owned staging) and uploads it when the sequence runs.
  Sequence& upload(const Tensor& dst, std::span<const std::byte> data);
  template <class T>
  Sequence& upload(const Tensor& dst, std::span<const T> data) {
    return upload(dst, std::as_bytes(data));
  }
  template <class T>
  Sequence& upload(const Tensor& dst, const std::vector<T>& data) {
    return upload(dst, std::as_bytes(std::span<const T>(data)));
  }
  Sequence& copy(const Tensor& src, const Tensor& dst);  // byte sizes must match
  Sequence& fill(const Tensor& dst, std::uint32_t word = 0);
  // Makes `src` readable by the host once the sequence is done; read it with read<T>().
  Sequence& download(const Tensor& src);

  // Debug-utils label regions (nestable) around the commands recorded between them, e.g. one
  // per model step. No-ops when debug labels are off; unbalanced regions are closed at the end.
  Sequence& begin_label(std::string name);
  Sequence& end_label();

  // --- running ---------------------------------------------------------------------
  // Submits to the Context's queue. The first submit() ends the recording; submitting again
  // replays the same command buffer without re-recording (uploads re-send the data given at
  // record time, gates start open again). Never blocks on the GPU.
  void submit(const SubmitSync& sync = {});

  // Records this sequence's work into `cb`, a command buffer the app owns, has begun, and will
  // submit itself (render graphs, one frame command buffer). Ends the recording like submit();
  // may be called again -- for the next frame's command buffer, even while an earlier one is
  // in flight -- without re-recording: it re-emits the same commands (descriptor sets,
  // staging and barriers were made once). The work is bracketed by two global memory barriers:
  //   entry: compute + transfer + indirect-read stages -> compute + transfer + indirect-read
  //          (vkrnn's earlier work, in this or earlier submissions, before this work);
  //   exit:  compute + transfer -> all commands, shader/transfer writes -> memory read/write
  //          (so the app's later commands in `cb` may read vkrnn's tensors).
  // The app's own resources are not touched, so it needs no barrier of its own unless it reads
  // or writes vkrnn tensors. Requirements: `cb` belongs to a pool of the Context's queue family
  // and is submitted on a queue of that family (vkrnn's buffers are not shared across
  // families), outside a render pass (compute is not allowed inside one), after this call
  // (staging data and the gate table's initial counts are written now). Uploads still pending
  // in an UploadBatch are submitted by this call, on vkrnn's queue: submit `cb` on that queue,
  // or wait for UploadTicket first.
  //
  // done_when: the timeline value the app's submission signals once it completed; done(),
  // wait(), reset() and the destructor then follow it (vkrnn's own work's point -- nothing
  // else of the app's is waited for). Without one (binary semaphores only), call
  // mark_complete() once the app knows its submission finished (e.g. its frame fence), before
  // reading results or reset(); the destructor then cannot wait, and destroying the sequence
  // earlier is undefined, as for any object a pending command buffer uses.
  void record_into(VkCommandBuffer cb, const TimelinePoint& done_when = {});
  // The app submitted a command buffer it recorded with record_into() once more (a frame loop
  // that records its command buffer once and resubmits it): track this submission instead.
  void resubmitted(const TimelinePoint& done_when = {});
  // The app's submission of the recorded work finished (for record_into without a timeline).
  void mark_complete();

  bool done() const;  // polls the fence (or the timeline point); never blocks
  // Blocks until done; returns false on timeout (then the work is still in flight).
  bool wait(std::uint64_t timeout_ns = UINT64_MAX);
  void eval() { submit(); wait(); }
  // Clears the recording (waits first if in flight) so the sequence can be reused.
  void reset();

  // --- results (after wait) --------------------------------------------------------
  void read_bytes(const Tensor& src, std::span<std::byte> dst) const;
  template <class T>
  std::vector<T> read(const Tensor& src) const {
    std::vector<T> v(src.bytes() / sizeof(T));
    read_bytes(src, std::as_writable_bytes(std::span<T>(v)));
    return v;
  }

  const SequenceStats& stats() const;
  std::vector<DispatchTiming> timings() const;  // empty unless options.profile
  VkCommandBuffer command_buffer() const;  // vkrnn's own; recorded at the first submit()

 private:
  friend struct detail::SequenceAccess;
  std::unique_ptr<detail::SequenceImpl> impl_;
};

}  // namespace vkrnn
