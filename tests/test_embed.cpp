// vkrnn inside an engine's frame (issue 15): work recorded into the app's command buffers,
// timeline semaphores, no stall of an adopted device, batched and asynchronous uploads, warm
// start, memory budget / limit / allocator hooks / statistics, debug-utils names and labels.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "common/app_device.hpp"
#include "common/saxpy.hpp"
#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "test_models_tiny.hpp"
#include "vk/context_impl.hpp"
#include "vkrnn/vkrnn.hpp"

using namespace vkrnn;

namespace {

const std::string kDates = "samples/dates/model";
const std::string kSentiment = "samples/sentiment/model";

using test::record_saxpy;
using test::saxpy;

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// The app's side of an adopted device: its command pool, command buffers, timeline semaphores,
// host-visible buffers and submissions, made with Vulkan directly as an engine would.
class AppWork {
 public:
  // timeline: the device has timelineSemaphore enabled (submissions then carry values).
  explicit AppWork(const test::AppDevice& app, bool timeline = true)
      : app_(app), f_(app.fns()), device_(app.device()), timeline_(timeline) {
    auto get = [&](const char* name) { return app.instance_fns().vkGetDeviceProcAddr(device_, name); };
    create_semaphore_ = reinterpret_cast<PFN_vkCreateSemaphore>(get("vkCreateSemaphore"));
    destroy_semaphore_ = reinterpret_cast<PFN_vkDestroySemaphore>(get("vkDestroySemaphore"));
    signal_semaphore_ = reinterpret_cast<PFN_vkSignalSemaphore>(get("vkSignalSemaphore"));
    queue_wait_idle_ = reinterpret_cast<PFN_vkQueueWaitIdle>(get("vkQueueWaitIdle"));
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = app.queue_family();
    EXPECT_EQ(f_.vkCreateCommandPool(device_, &pi, nullptr, &pool_), VK_SUCCESS);
  }
  ~AppWork() {
    queue_wait_idle_(app_.queue());
    for (auto s : semaphores_) destroy_semaphore_(device_, s, nullptr);
    for (auto fe : fences_) f_.vkDestroyFence(device_, fe, nullptr);
    for (auto& [buf, mem] : buffers_) {
      f_.vkDestroyBuffer(device_, buf, nullptr);
      f_.vkFreeMemory(device_, mem, nullptr);
    }
    f_.vkDestroyCommandPool(device_, pool_, nullptr);
  }

  VkCommandBuffer begin() {
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    VkCommandBuffer cb = VK_NULL_HANDLE;
    EXPECT_EQ(f_.vkAllocateCommandBuffers(device_, &ai, &cb), VK_SUCCESS);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    EXPECT_EQ(f_.vkBeginCommandBuffer(cb, &bi), VK_SUCCESS);
    return cb;
  }
  void end(VkCommandBuffer cb) { EXPECT_EQ(f_.vkEndCommandBuffer(cb), VK_SUCCESS); }

  VkSemaphore semaphore(bool timeline) {
    VkSemaphoreTypeCreateInfo ti{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
    ti.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
    VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
    si.pNext = timeline ? &ti : nullptr;
    VkSemaphore s = VK_NULL_HANDLE;
    EXPECT_EQ(create_semaphore_(device_, &si, nullptr, &s), VK_SUCCESS);
    semaphores_.push_back(s);
    return s;
  }
  VkFence fence() {
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fe = VK_NULL_HANDLE;
    EXPECT_EQ(f_.vkCreateFence(device_, &fi, nullptr, &fe), VK_SUCCESS);
    fences_.push_back(fe);
    return fe;
  }

  // One submission; a point with a null semaphore is left out. Values only with timeline_.
  void submit(VkCommandBuffer cb, TimelinePoint wait, TimelinePoint signal, VkFence fence = VK_NULL_HANDLE,
              VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT) {
    VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
    ti.waitSemaphoreValueCount = wait.semaphore ? 1 : 0;
    ti.pWaitSemaphoreValues = &wait.value;
    ti.signalSemaphoreValueCount = signal.semaphore ? 1 : 0;
    ti.pSignalSemaphoreValues = &signal.value;
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.pNext = timeline_ && (wait.semaphore || signal.semaphore) ? &ti : nullptr;
    si.waitSemaphoreCount = wait.semaphore ? 1 : 0;
    si.pWaitSemaphores = &wait.semaphore;
    si.pWaitDstStageMask = &wait_stage;
    si.commandBufferCount = cb ? 1 : 0;
    si.pCommandBuffers = &cb;
    si.signalSemaphoreCount = signal.semaphore ? 1 : 0;
    si.pSignalSemaphores = &signal.semaphore;
    EXPECT_EQ(f_.vkQueueSubmit(app_.queue(), 1, &si, fence), VK_SUCCESS);
  }
  void signal(VkSemaphore s, std::uint64_t value) {
    VkSemaphoreSignalInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
    si.semaphore = s;
    si.value = value;
    EXPECT_EQ(signal_semaphore_(device_, &si), VK_SUCCESS);
  }
  bool wait(VkSemaphore s, std::uint64_t value, std::uint64_t timeout_ns = 60'000'000'000ull) {
    VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
    wi.semaphoreCount = 1;
    wi.pSemaphores = &s;
    wi.pValues = &value;
    return f_.vkWaitSemaphores(device_, &wi, timeout_ns) == VK_SUCCESS;
  }
  void wait_idle() { queue_wait_idle_(app_.queue()); }

  // A host-visible, coherent buffer of the app's, mapped.
  std::pair<VkBuffer, const std::uint32_t*> host_buffer(const DeviceInfo& info, VkDeviceSize bytes) {
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = bytes;
    bi.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    VkBuffer buf = VK_NULL_HANDLE;
    EXPECT_EQ(f_.vkCreateBuffer(device_, &bi, nullptr, &buf), VK_SUCCESS);
    VkMemoryRequirements req{};
    f_.vkGetBufferMemoryRequirements(device_, buf, &req);
    std::uint32_t type = 0;
    while (!((req.memoryTypeBits >> type) & 1) || !info.memory_types[type].host_visible ||
           !info.memory_types[type].host_coherent) {
      ++type;
    }
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = type;
    VkDeviceMemory mem = VK_NULL_HANDLE;
    EXPECT_EQ(f_.vkAllocateMemory(device_, &ai, nullptr, &mem), VK_SUCCESS);
    EXPECT_EQ(f_.vkBindBufferMemory(device_, buf, mem, 0), VK_SUCCESS);
    void* p = nullptr;
    EXPECT_EQ(f_.vkMapMemory(device_, mem, 0, VK_WHOLE_SIZE, 0, &p), VK_SUCCESS);
    buffers_.emplace_back(buf, mem);
    return {buf, static_cast<const std::uint32_t*>(p)};
  }
  // cb: fill `buf` with `word` (the app's own frame work).
  void fill(VkCommandBuffer cb, VkBuffer buf, VkDeviceSize bytes, std::uint32_t word) {
    f_.vkCmdFillBuffer(cb, buf, 0, bytes, word);
  }
  // cb: copy `from` into `to`, then make it visible to the host.
  void copy_to_host(VkCommandBuffer cb, VkBuffer from, VkBuffer to, VkDeviceSize bytes) {
    const VkBufferCopy region{0, 0, bytes};
    f_.vkCmdCopyBuffer(cb, from, to, 1, &region);
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    f_.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0,
                            nullptr);
  }

 private:
  const test::AppDevice& app_;
  const vk::DeviceFns& f_;
  VkDevice device_;
  bool timeline_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  PFN_vkCreateSemaphore create_semaphore_ = nullptr;
  PFN_vkDestroySemaphore destroy_semaphore_ = nullptr;
  PFN_vkSignalSemaphore signal_semaphore_ = nullptr;
  PFN_vkQueueWaitIdle queue_wait_idle_ = nullptr;
  std::vector<VkSemaphore> semaphores_;
  std::vector<VkFence> fences_;
  std::vector<std::pair<VkBuffer, VkDeviceMemory>> buffers_;
};

test::AppDeviceOptions timeline_app() {
  return {.validation = true, .sync_validation = true, .timeline_semaphore = true};
}

void expect_no_app_messages(test::AppDevice& app) {
  app.destroy();  // leaked vkrnn objects would be reported here
  EXPECT_TRUE(app.messages().empty()) << app.messages().front();
}

// y += x per step over 9 gated steps; the flags become all set after step 3 (GPU-side fill).
struct GatedProgram {
  Tensor x, y, flags;
  GatedProgram(Context& ctx, Sequence& seq) {
    const std::uint32_t n = 777;
    x = ctx.tensor({n}, std::vector<float>(n, 1.5f));
    y = ctx.tensor({n}, DType::f32);
    flags = ctx.tensor({3}, DType::u32);
    auto k = saxpy(ctx, 64);
    seq.fill(y, 0).fill(flags, 0).begin_gate();
    for (int i = 0; i < 9; ++i) {
      record_saxpy(seq, k, x, y, 1.0f + static_cast<float>(i));
      if (i == 3) seq.fill(flags, 1);
      seq.close_gate_when_all(flags);
    }
    seq.end_gate().download(y);
  }
};

}  // namespace

// ---------------------------------------------------------------------------- record_into

// A decode step by step: one sequence submitted by vkrnn, the other recorded into the app's
// command buffer and submitted by the app with a timeline point. Every result bit-identical.
TEST(RecordInto, DecodeStepsMatchOwnSubmissionBitForBit) {
  test::AppDevice app(timeline_app());
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    ASSERT_TRUE(ctx.features().timeline_semaphore);
    const auto model = Seq2Seq::load(ctx, test::source_path(kDates));
    const auto src = model.encode_text("Nov 21st, 2026");
    const DecodeOptions opts{.return_logits = true, .return_attention = true};
    const auto enc_own = model.prepare({src}), enc_app = model.prepare({src});
    auto st_own = model.start(enc_own, opts), st_app = model.start(enc_app, opts);
    auto own = ctx.sequence({.label = "own"});
    auto mine = ctx.sequence({.label = "recorded into the app's"});
    AppWork w(app);
    const VkSemaphore timeline = w.semaphore(true);
    const auto [frame, frame_map] = w.host_buffer(ctx.device(), 4096);
    const auto [shown, shown_map] = w.host_buffer(ctx.device(), 4096);
    std::vector<std::int32_t> tokens;
    for (std::uint64_t t = 1; t <= model.config().max_decode_length; ++t) {
      own.reset();
      mine.reset();
      if (t == 1) {
        model.record_encode(own, enc_own);
        model.record_encode(mine, enc_app);
      }
      model.record_step(own, st_own);
      model.record_step(mine, st_app);
      own.submit();
      // The app's frame: its own work, vkrnn's step, more of its own, one submission.
      VkCommandBuffer cb = w.begin();
      w.fill(cb, frame, 4096, static_cast<std::uint32_t>(t));
      mine.record_into(cb, {timeline, t});
      w.copy_to_host(cb, frame, shown, 4096);
      w.end(cb);
      w.submit(cb, {}, {timeline, t});
      ASSERT_TRUE(own.wait());
      ASSERT_TRUE(mine.wait());
      EXPECT_TRUE(mine.done());
      EXPECT_EQ(shown_map[1023], t);  // the app's own work ran around vkrnn's
      const StepResult a = model.read_step(own, st_own), b = model.read_step(mine, st_app);
      EXPECT_EQ(a.tokens, b.tokens) << "step " << t;
      EXPECT_TRUE(same_bits(a.scores, b.scores)) << "step " << t;
      EXPECT_TRUE(same_bits(a.logits, b.logits)) << "step " << t;
      EXPECT_TRUE(same_bits(a.attention, b.attention)) << "step " << t;
      EXPECT_EQ(mine.stats().recordings, 1u);
      EXPECT_EQ(mine.stats().submissions, 0u);
      tokens.push_back(b.tokens[0]);
      if (b.all_finished) break;
    }
    EXPECT_EQ(model.decode_text(tokens), "2026-11-21");
  }
  expect_no_app_messages(app);
}

// seq recorded into one of the app's command buffers (signalling a timeline it owns), submitted
// by the app and polled with done() while the app's frames would go on.
void run_in_one_app_frame(AppWork& w, Sequence& seq) {
  const VkSemaphore timeline = w.semaphore(true);
  VkCommandBuffer cb = w.begin();
  seq.record_into(cb, {timeline, 1});
  w.end(cb);
  w.submit(cb, {}, {timeline, 1});
  while (!seq.done()) std::this_thread::yield();
}

// A whole greedy decode (record_greedy: every step, the early-stop gate, the downloads) inside
// one of the app's frames, polled with done() while the app goes on: greedy()'s result bit for
// bit, the GPU having stopped at the EOS without the host.
TEST(RecordInto, WholeGreedyDecodeInOneAppFrame) {
  test::AppDevice app(timeline_app());
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    const auto model = Seq2Seq::load(ctx, test::source_path(kDates));
    const std::vector<std::vector<std::int32_t>> src = {model.encode_text("Nov 21st, 2026"), model.encode_text("3 May 1999")};
    const DecodeOptions opts{.return_attention = true};
    const DecodeResult own = model.greedy(src, opts);
    const auto enc = model.prepare(src);
    auto seq = ctx.sequence({.label = "a whole decode in the app's frame"});
    model.record_encode(seq, enc);
    const auto decode = model.record_greedy(seq, enc, opts);
    AppWork w(app);
    run_in_one_app_frame(w, seq);
    const DecodeResult r = model.read_greedy(seq, decode);
    EXPECT_EQ(r.tokens, own.tokens);
    EXPECT_EQ(r.lengths, own.lengths);
    EXPECT_TRUE(same_bits(r.scores, own.scores));
    EXPECT_TRUE(same_bits(r.attention, own.attention));
    EXPECT_EQ(r.steps_run, own.steps_run);
    EXPECT_LT(r.steps_run, model.config().max_decode_length);
    EXPECT_EQ(r.stats.submissions, 0u);  // the app submitted it
    EXPECT_EQ(model.decode_text(r.row(0)), "2026-11-21");
    EXPECT_EQ(model.decode_text(r.row(1)), "1999-05-03");
  }
  expect_no_app_messages(app);
}

// A whole beam search (record_beam: the expansion to K rows, every step inside the gate, the
// downloads) inside one of the app's frames, polled: beam()'s hypotheses bit for bit, the GPU
// having stopped once both sources were done.
TEST(RecordInto, WholeBeamSearchInOneAppFrame) {
  test::AppDevice app(timeline_app());
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    const auto model = Seq2Seq::load(ctx, test::source_path(kDates));
    const std::vector<std::vector<std::int32_t>> src = {model.encode_text("Nov 21st, 2026"), model.encode_text("3 May 1999")};
    DecodeStats own_stats, app_stats;
    const auto own = model.beam(src, {.beam_width = 4, .return_attention = true, .stats = &own_stats});
    const auto enc = model.prepare(src);
    auto seq = ctx.sequence({.label = "a whole beam search in the app's frame"});
    model.record_encode(seq, enc);
    const auto search = model.record_beam(seq, enc, {.beam_width = 4, .return_attention = true, .stats = &app_stats});
    AppWork w(app);
    run_in_one_app_frame(w, seq);
    const auto r = model.read_beam(seq, search);
    test::expect_same_beams(r, own);
    EXPECT_EQ(app_stats.steps_run, own_stats.steps_run);
    EXPECT_LT(app_stats.steps_run, model.config().max_decode_length);
    EXPECT_EQ(app_stats.sequence.submissions, 0u);  // the app submitted it
    EXPECT_EQ(app_stats.sequence.gated_dispatches, own_stats.sequence.gated_dispatches);
    EXPECT_EQ(model.decode_text(r[0][0].tokens), "2026-11-21");
    EXPECT_EQ(model.decode_text(r[1][0].tokens), "1999-05-03");
  }
  expect_no_app_messages(app);
}

// The dates sample's decoder steps, in dispatches (issue 14: at most 4 per step, greedy and beam
// search). Greedy: the fused attention, the GRU step, and the output projection with the argmax,
// which also writes the next token's embedding and, stopping at EOS, does the gate check: an
// early-stopping decode records no more dispatches than a fixed-length one. Beam search: the
// same and the output projection apart, then BeamStep (top-k, merge, the state's and the next
// tokens' embeddings, the gate check). Step 0 looks BOS's embedding up itself (+1).
TEST(DatesModel, AtMostFourDispatchesPerDecoderStep) {
  Context& ctx = test::context();
  const auto model = Seq2Seq::load(ctx, test::source_path(kDates));
  const std::vector<std::vector<std::int32_t>> src = {model.encode_text("Nov 21st, 2026"), model.encode_text("3 May 1999")};
  const std::size_t T = model.config().max_decode_length;
  const DecodeResult early = model.greedy(src, {.max_len = T});
  const DecodeResult fixed = model.greedy(src, {.max_len = T, .stop_at_eos = false});
  EXPECT_LT(early.steps_run, T);  // the gate closed
  EXPECT_EQ(early.stats.dispatches, fixed.stats.dispatches);
  EXPECT_LE(early.stats.gated_dispatches, 3 * T + 1);
  DecodeStats beam;
  const auto hyps = model.beam(src, {.beam_width = 4, .stats = &beam});
  EXPECT_LT(beam.steps_run, T);
  EXPECT_LE(beam.sequence.gated_dispatches, 4 * T + 1);
  EXPECT_EQ(model.decode_text(hyps[0][0].tokens), "2026-11-21");
  EXPECT_EQ(model.decode_text(hyps[1][0].tokens), "1999-05-03");
  std::printf("dates, %zu steps recorded: greedy %u dispatches (%u gated), beam K = 4 %u (%u gated)\n", T,
              early.stats.dispatches, early.stats.gated_dispatches, beam.sequence.dispatches, beam.sequence.gated_dispatches);
}

// A gated loop (GPU-side early exit) through the app's command buffers: the gate table's counts
// come from staging written when the recording ended, so every execution starts open -- own
// submission, record_into, re-emission into another command buffer without re-recording, and
// the app resubmitting its command buffer as it is.
TEST(RecordInto, GatedLoopReplaysThroughAppCommandBuffers) {
  test::AppDevice app(timeline_app());
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    auto own = ctx.sequence({.label = "gated, own"});
    GatedProgram p_own(ctx, own);
    own.eval();
    const auto y_own = own.read<float>(p_own.y);
    EXPECT_EQ(y_own[0], 1.5f * (1 + 2 + 3 + 4));
    EXPECT_EQ(own.open_gate_checks(), 3u);

    auto seq = ctx.sequence({.label = "gated, app"});
    GatedProgram p(ctx, seq);
    const auto recorded = seq.stats();
    AppWork w(app);
    const VkSemaphore timeline = w.semaphore(true);
    VkCommandBuffer first = w.begin();
    seq.record_into(first, {timeline, 1});
    w.end(first);
    VkCommandBuffer second = w.begin();
    seq.record_into(second, {timeline, 2});  // re-emitted while the first is not even submitted
    w.end(second);
    w.submit(first, {}, {timeline, 1});
    w.submit(second, {}, {timeline, 2});
    ASSERT_TRUE(seq.wait());
    EXPECT_TRUE(same_bits(seq.read<float>(p.y), y_own));
    EXPECT_EQ(seq.open_gate_checks(), 3u);
    // The app resubmits its command buffer as it is (a frame loop that records once).
    seq.resubmitted({timeline, 3});
    EXPECT_FALSE(seq.done());
    w.submit(second, {}, {timeline, 3});
    ASSERT_TRUE(seq.wait());
    EXPECT_TRUE(same_bits(seq.read<float>(p.y), y_own));
    EXPECT_EQ(seq.open_gate_checks(), 3u);
    // ... and vkrnn may submit the same recording itself.
    seq.submit();
    ASSERT_TRUE(seq.wait());
    EXPECT_TRUE(same_bits(seq.read<float>(p.y), y_own));
    EXPECT_EQ(seq.stats().recordings, 2u);
    EXPECT_EQ(seq.stats().submissions, 1u);
    EXPECT_EQ(seq.stats().dispatches, recorded.dispatches);  // nothing recorded again
    EXPECT_EQ(seq.stats().barriers, recorded.barriers);
  }
  expect_no_app_messages(app);
}

// Binary semaphores only: no timeline point, so the app says when its submission is done.
TEST(RecordInto, WithoutTimelineTheAppMarksCompletion) {
  test::AppDevice app(/*validation=*/true);
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    EXPECT_FALSE(ctx.features().timeline_semaphore);
    auto x = ctx.tensor({100}, std::vector<float>(100, 2.0f));
    auto y = ctx.tensor({100}, std::vector<float>(100, 1.0f));
    auto seq = ctx.sequence({.label = "binary"});
    record_saxpy(seq, saxpy(ctx), x, y, 3.0f);
    seq.download(y);
    AppWork w(app, /*timeline=*/false);
    const VkFence fence = w.fence();
    VkCommandBuffer cb = w.begin();
    seq.record_into(cb);
    w.end(cb);
    test::expect_error([&] { seq.read<float>(y); }, ErrorCode::state, {"read of"});
    w.submit(cb, {}, {}, fence);
    EXPECT_FALSE(seq.done());  // vkrnn cannot know: it never polls the app's fence
    test::expect_error([&] { seq.wait(); }, ErrorCode::state, {"call mark_complete()"});
    test::expect_error([&] { seq.submit(); }, ErrorCode::state, {"submitted again while still in flight"});
    ASSERT_EQ(app.fns().vkWaitForFences(app.device(), 1, &fence, VK_TRUE, UINT64_MAX), VK_SUCCESS);
    seq.mark_complete();
    EXPECT_TRUE(seq.done());
    EXPECT_EQ(seq.read<float>(y)[99], 7.0f);
    test::expect_error([&] {
      seq.reset();
      seq.record_into(w.begin(), {w.semaphore(false), 1});
    }, ErrorCode::missing_feature, {"timeline semaphores"});
    test::expect_error([&] { seq.record_into(VK_NULL_HANDLE); }, ErrorCode::invalid_argument, {"needs a command buffer"});
    auto other = ctx.sequence();
    test::expect_error([&] { other.mark_complete(); }, ErrorCode::state, {"mark_complete() is for work recorded"});
    test::expect_error([&] { other.resubmitted(); }, ErrorCode::state, {"without a record_into()"});
  }
  expect_no_app_messages(app);
}

// ---------------------------------------------------------------------------- timeline semaphores

// app (signals 1 from the host) -> vkrnn (waits 1, signals 2) -> app copy (waits 2, signals 3):
// vkrnn's work does not start before 1, the app's copy sees vkrnn's result, and synchronization
// validation finds no hazard across the three.
TEST(Timeline, SubmitSyncWaitsAndSignalsInOrder) {
  test::AppDevice app(timeline_app());
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    const std::uint32_t n = 1000;
    auto x = ctx.tensor({n}, std::vector<float>(n, 2.0f));
    auto y = ctx.tensor({n}, std::vector<float>(n, 1.0f));
    AppWork w(app);
    const VkSemaphore timeline = w.semaphore(true);
    const VkSemaphore binary = w.semaphore(false);
    auto seq = ctx.sequence({.label = "timeline"});
    record_saxpy(seq, saxpy(ctx), x, y, 5.0f);
    // A binary semaphore in the same lists: its value is ignored.
    seq.submit({.wait = {timeline},
                .wait_stages = {VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT},
                .signal = {timeline, binary},
                .wait_values = {1},
                .signal_values = {2, 0}});
    const auto [readback, mapped] = w.host_buffer(ctx.device(), n * 4);
    VkCommandBuffer cb = w.begin();
    w.copy_to_host(cb, y.storage().buffer.handle, readback, n * 4);
    w.end(cb);
    w.submit(cb, {timeline, 2}, {timeline, 3}, VK_NULL_HANDLE, VK_PIPELINE_STAGE_TRANSFER_BIT);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(seq.done());  // waiting for value 1, which nobody has signalled
    w.signal(timeline, 1);
    ASSERT_TRUE(w.wait(timeline, 3));
    EXPECT_TRUE(seq.done());
    float first = 0;
    std::memcpy(&first, mapped, 4);
    EXPECT_EQ(first, 11.0f);
    w.submit(VK_NULL_HANDLE, {binary, 0}, {}, VK_NULL_HANDLE);  // consume the binary signal
    w.wait_idle();

    // Malformed lists.
    seq.reset();
    test::expect_error([&] {
      seq.submit({.signal = {timeline}, .signal_values = {4, 5}});
    }, ErrorCode::invalid_argument, {"one value per semaphore"});
  }
  expect_no_app_messages(app);
}

TEST(Timeline, ClearErrorWithoutTimelineSupport) {
  test::AppDevice app(/*validation=*/true);  // Vulkan 1.1, timelineSemaphore not enabled
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    EXPECT_FALSE(ctx.features().timeline_semaphore);
    AppWork w(app, /*timeline=*/false);
    const VkSemaphore binary = w.semaphore(false);
    auto seq = ctx.sequence({.label = "no timeline"});
    test::expect_error([&] {
      seq.submit({.signal = {binary}, .signal_values = {1}});
    }, ErrorCode::missing_feature, {"ExternalDevice::features.timeline_semaphore"});
    // Binary semaphores keep working.
    seq.submit({.signal = {binary}});
    w.submit(VK_NULL_HANDLE, {binary, 0}, {});
    EXPECT_TRUE(seq.wait());
    w.wait_idle();
  }
  expect_no_app_messages(app);
}

// ---------------------------------------------------------------------------- never stall the app

// The app's work waits on a timeline value nobody has signalled yet, on the queue vkrnn uses
// (the only queue lavapipe has; a wait on another queue is the milder case). Destroying the
// adopted Context -- with a model whose weights went up through staging, asynchronously -- must
// return: vkDeviceWaitIdle (or vkQueueWaitIdle) here would never return.
TEST(Adoption, DestroyingTheContextDoesNotWaitForAppWork) {
  test::AppDevice app(timeline_app());
  {
    AppWork w(app);
    const VkSemaphore gate = w.semaphore(true);
    auto ctx = std::make_unique<Context>(
        Context::adopt(app.external(), {.force_staging = true, .disable_pipeline_cache = true}));
    std::string decoded;
    {
      UploadBatch uploads(*ctx);
      const auto model = Seq2Seq::load(*ctx, test::source_path(kDates));
      const UploadTicket ready = uploads.submit();  // not waited for
      decoded = model.translate({"21/11/26"})[0];
    }
    EXPECT_EQ(decoded, "2026-11-21");
    const auto [buf, mapped] = w.host_buffer(ctx->device(), 256);
    VkCommandBuffer cb = w.begin();
    w.fill(cb, buf, 256, 42);
    w.end(cb);
    w.submit(cb, {gate, 1}, {});
    auto destroyed = std::async(std::launch::async, [&] { ctx.reset(); });
    const bool returned = destroyed.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    w.signal(gate, 1);  // release the app's work either way
    destroyed.wait();
    EXPECT_TRUE(returned) << "~Context waited for the app's pending work";
    w.wait_idle();
    EXPECT_EQ(mapped[63], 42u);
  }
  expect_no_app_messages(app);
}

// ---------------------------------------------------------------------------- uploads

TEST(Uploads, ModelWeightsAreOneSubmissionOnTheStagingPath) {
  auto batched_opts = test::validated_options();
  batched_opts.force_staging = true;
  auto unbatched_opts = batched_opts;
  unbatched_opts.upload_batch_bytes = 0;  // the behaviour before UploadBatch
  Context batched(batched_opts), unbatched(unbatched_opts);
  auto load = [&](Context& ctx, std::uint64_t& submits, double& ms) {
    const auto before = ctx.impl().queue_submits.load();
    const auto t0 = std::chrono::steady_clock::now();
    auto model = Seq2Seq::load(ctx, test::source_path(kDates));
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    submits = ctx.impl().queue_submits.load() - before;
    return model;
  };
  std::uint64_t n_batched = 0, n_unbatched = 0;
  double ms_batched = 0, ms_unbatched = 0;
  const auto a = load(batched, n_batched, ms_batched);
  const auto b = load(unbatched, n_unbatched, ms_unbatched);
  EXPECT_EQ(n_batched, 1u);
  EXPECT_GT(n_unbatched, 10u);  // one per weight tensor
  std::cout << "dates model load on the staging path: " << n_batched << " submission, " << ms_batched
            << " ms batched; " << n_unbatched << " submissions, " << ms_unbatched << " ms one by one\n";
  const std::vector<std::string> dates = {"Nov 21st, 2026", "2026.11.21"};
  EXPECT_EQ(a.translate(dates), b.translate(dates));
  EXPECT_EQ(a.translate(dates)[0], "2026-11-21");
}

TEST(Uploads, LoadReturnsBeforeTheUploadAndDecodesQueueBehindIt) {
  auto opts = test::validated_options();
  opts.force_staging = true;
  Context ctx(opts);
  UploadBatch uploads(ctx);
  const auto before = ctx.impl().queue_submits.load();
  const auto model = Classifier::load(ctx, test::source_path(kSentiment));
  EXPECT_EQ(ctx.impl().queue_submits.load(), before);  // recorded, nothing submitted yet
  const UploadTicket ready = uploads.submit();
  EXPECT_EQ(ctx.impl().queue_submits.load(), before + 1);
  // Submitted before the ticket is done: queued behind the uploads on the GPU.
  const auto labels = model.classify_text({"the acting was great", "i did not like the movie"});
  EXPECT_EQ(labels, (std::vector<std::string>{"positive", "negative"}));
  EXPECT_TRUE(ready.wait());
  EXPECT_TRUE(ready.done());
  EXPECT_EQ(ctx.memory_stats().staging_bytes, 0u) << "finished uploads keep their staging";
}

TEST(Uploads, NestedBatchesTensorsDroppedEarlyAndBoundedStaging) {
  auto opts = test::validated_options();
  opts.force_staging = true;
  opts.upload_batch_bytes = 1 << 20;
  Context ctx(opts);
  const auto before = ctx.impl().queue_submits.load();
  UploadBatch outer(ctx);
  std::vector<Tensor> kept;
  std::vector<std::vector<float>> data;
  UploadTicket inner_ticket;
  {
    UploadBatch inner(ctx);
    for (int i = 0; i < 6; ++i) {
      data.push_back(test::random_floats(100'000, 7 + i));  // 400 KB each: 3 per submission
      kept.push_back(ctx.tensor({100'000}, data.back()));
      // A tensor written and dropped while its copy is only recorded: the copy is sent first.
      if (i == 4) ctx.tensor({1000}, std::vector<float>(1000, 1.0f));
    }
    ctx.write(kept[0], data[0]);  // the same tensor twice in one batch
    inner_ticket = inner.submit();
    EXPECT_FALSE(inner_ticket.done());
    test::expect_error([&] { inner_ticket.wait(); }, ErrorCode::state, {"open UploadBatch"});
    test::expect_error([&] { inner.submit(); }, ErrorCode::state, {"already submitted"});
  }
  const UploadTicket ticket = outer.submit();
  EXPECT_TRUE(ticket.wait());
  EXPECT_TRUE(inner_ticket.wait());
  EXPECT_GE(ctx.impl().queue_submits.load() - before, 3u);  // bounded by upload_batch_bytes
  for (std::size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(ctx.read<float>(kept[i]), data[i]) << i;
}

// ---------------------------------------------------------------------------- warm start

TEST(WarmUp, FirstDecodesAfterWarmUpBuildNoPipeline) {
  Context ctx(test::validated_options());
  const auto model = Seq2Seq::load(ctx, test::source_path(kDates));
  const auto src = model.encode_text("Saturday 21 November 2026");
  model.warm_up({.batch_sizes = {1, 3}, .lengths = {src.size()}}).wait();
  const auto built = ctx.pipeline_stats().kernels;
  EXPECT_GT(built, 10u);
  EXPECT_EQ(model.greedy({src}).row(0).size(), 11u);
  EXPECT_FALSE(model.beam({src}).empty());
  model.greedy({src, src, src});
  model.beam({src, src, src});
  auto state = model.start(model.encode({src}));
  model.step(state);  // the incremental API: the same kernels
  EXPECT_EQ(ctx.pipeline_stats().kernels, built) << "a decode of a warmed shape built pipelines";
}

TEST(WarmUp, ClassifierOnABackgroundThread) {
  Context ctx(test::validated_options());
  const auto model = Classifier::load(ctx, test::source_path(kSentiment));
  WarmUpTask task = model.warm_up({.batch_sizes = {2}, .lengths = {6}, .background = true});
  task.wait();
  EXPECT_TRUE(task.done());
  const auto built = ctx.pipeline_stats().kernels;
  const auto r = model.classify({model.encode_text("the plot was dull but the acting"),
                                 model.encode_text("i did not like the movie")});
  EXPECT_EQ(r.batch, 2u);
  EXPECT_EQ(ctx.pipeline_stats().kernels, built);
}

// The list-driven form: kernel specs of one context, saved as text, prebuilt by another (on a
// thread), whose first decode then builds nothing; the pipeline cache file is written at once.
TEST(WarmUp, PrebuildFromSpecsSavedAsText) {
  std::vector<std::string> lines;
  {
    Context a(test::validated_options());
    Seq2Seq::load(a, test::source_path(kDates)).translate({"21/11/26"});
    for (const auto& spec : a.kernel_specs()) lines.push_back(to_string(spec));
  }
  ASSERT_FALSE(lines.empty());
  namespace fs = std::filesystem;
  const fs::path dir = test::binary_path("test-embed-prebuild-cache");
  fs::remove_all(dir);
  auto opts = test::validated_options();
  opts.cache_dir = dir.string();
  Context b(opts);
  std::vector<KernelSpec> specs;
  for (const auto& l : lines) specs.push_back(parse_kernel_spec(l));
  EXPECT_EQ(to_string(specs.front()), lines.front());
  WarmUpTask task = b.prebuild(specs, {.background = true});
  task.wait();
  EXPECT_EQ(b.pipeline_stats().prebuilt, specs.size());
  EXPECT_TRUE(fs::exists(b.pipeline_cache_path())) << "saved after prebuild";
  const auto built = b.pipeline_stats().kernels;
  EXPECT_EQ(Seq2Seq::load(b, test::source_path(kDates)).translate({"21/11/26"})[0], "2026-11-21");
  EXPECT_EQ(b.pipeline_stats().kernels, built);

  for (const char* bad : {"", "saxpy", "saxpy|2|8", "saxpy|2|8|64,,1", "saxpy|x|8|64", "|2|8|64"}) {
    test::expect_error([&] { parse_kernel_spec(bad); }, ErrorCode::format, {"kernel spec"});
  }
  test::expect_error([&] { b.prebuild({{"nope", {64, 1, 1}, 1, 0}}).wait(); }, ErrorCode::not_found, {"no embedded shader"});
}

// ---------------------------------------------------------------------------- memory

TEST(Memory, StatsPerHeapAndBudget) {
  auto& ctx = test::staging_context();
  auto t = ctx.tensor({1 << 20}, DType::f32, "stats");
  auto seq = ctx.sequence();
  seq.upload(t, std::vector<float>(1 << 20, 1.0f));  // staging alive until reset
  const MemoryStats s = ctx.memory_stats();
  EXPECT_GE(s.device_memory_bytes, 2u * (4u << 20));
  EXPECT_GE(s.peak_device_memory_bytes, s.device_memory_bytes);
  EXPECT_GE(s.staging_bytes, 4u << 20);
  EXPECT_EQ(s.budget_known, ctx.features().memory_budget);
  ASSERT_EQ(s.heaps.size(), ctx.device().memory_heaps.size());
  std::uint64_t sum = 0;
  for (const auto& h : s.heaps) {
    sum += h.vkrnn_bytes;
    EXPECT_EQ(h.size, ctx.device().memory_heaps[h.heap].size);
    if (s.budget_known) {
      EXPECT_GT(h.budget, 0u);
      EXPECT_GE(h.usage, h.vkrnn_bytes);
    }
  }
  EXPECT_EQ(sum, s.device_memory_bytes);
  seq.reset();
  EXPECT_LT(ctx.memory_stats().staging_bytes, s.staging_bytes);
}

TEST(Memory, DeviceMemoryLimitIsRespected) {
  auto opts = test::validated_options();
  opts.device_memory_limit = 6 << 20;
  Context ctx(opts);
  auto a = ctx.tensor({1 << 18}, DType::f32, "one MiB");  // smaller blocks than usual: still fits
  auto b = ctx.tensor({1 << 20}, DType::f32, "four MiB");
  EXPECT_LE(ctx.memory_stats().device_memory_bytes, opts.device_memory_limit);
  test::expect_error([&] { ctx.tensor({1 << 19}, DType::f32, "two MiB"); }, ErrorCode::out_of_range, {"ContextOptions::device_memory_limit"});
  ctx.write(a, std::vector<float>(1 << 18, 3.0f));
  EXPECT_EQ(ctx.read<float>(a)[12345], 3.0f);
}

namespace {
// Host allocations through VkAllocationCallbacks, counted.
struct CountingHostAllocator {
  std::mutex m;
  std::map<void*, std::size_t> live;
  std::size_t calls = 0;
  static void* VKAPI_PTR allocate(void* user, std::size_t size, std::size_t align, VkSystemAllocationScope) {
    void* p = nullptr;
    if (posix_memalign(&p, std::max(align, sizeof(void*)), std::max<std::size_t>(size, 1)) != 0) return nullptr;
    auto* self = static_cast<CountingHostAllocator*>(user);
    std::lock_guard lock(self->m);
    self->live[p] = size;
    ++self->calls;
    return p;
  }
  static void VKAPI_PTR release(void* user, void* p) {
    if (!p) return;
    auto* self = static_cast<CountingHostAllocator*>(user);
    {
      std::lock_guard lock(self->m);
      self->live.erase(p);
    }
    std::free(p);
  }
  static void* VKAPI_PTR reallocate(void* user, void* old, std::size_t size, std::size_t align,
                                    VkSystemAllocationScope scope) {
    if (!old) return allocate(user, size, align, scope);
    if (size == 0) {
      release(user, old);
      return nullptr;
    }
    void* p = allocate(user, size, align, scope);
    if (!p) return nullptr;
    auto* self = static_cast<CountingHostAllocator*>(user);
    std::size_t had = 0;
    {
      std::lock_guard lock(self->m);
      had = self->live[old];
    }
    std::memcpy(p, old, std::min(had, size));
    release(user, old);
    return p;
  }
  VkAllocationCallbacks callbacks() { return {this, allocate, reallocate, release, nullptr, nullptr}; }
};
}  // namespace

TEST(Memory, AllocationCallbacksCarryVkrnnsHostAllocations) {
  CountingHostAllocator counter;
  const VkAllocationCallbacks callbacks = counter.callbacks();
  {
    auto opts = test::validated_options();
    opts.allocation_callbacks = &callbacks;
    opts.force_staging = true;
    Context ctx(opts);
    EXPECT_EQ(Seq2Seq::load(ctx, test::source_path(kDates)).translate({"2026.11.21"})[0], "2026-11-21");
  }
  EXPECT_GT(counter.calls, 0u);
  EXPECT_TRUE(counter.live.empty()) << counter.live.size() << " host allocations not freed";
}

// An app's allocator hands vkrnn its blocks at an odd offset inside its own allocations;
// vkrnn aligns inside them, maps what the hook did not, and gives every block back.
TEST(Memory, AppAllocatorHookProvidesEveryBlock) {
  test::AppDevice app(/*validation=*/true);
  int allocated = 0, freed = 0;
  {
    ContextOptions opts{.disable_pipeline_cache = true};
    const DeviceInfo* info = nullptr;
    opts.device_memory.allocate = [&](const VkMemoryAllocateInfo& ai, DeviceMemoryBlock& block) {
      VkMemoryAllocateInfo bigger = ai;
      bigger.allocationSize = ai.allocationSize + 100;
      const VkResult r = app.fns().vkAllocateMemory(app.device(), &bigger, nullptr, &block.memory);
      if (r != VK_SUCCESS) return r;
      block.offset = 100;
      // Half the host-visible blocks come mapped by the app, the other half vkrnn maps.
      if (info && info->memory_types[ai.memoryTypeIndex].host_visible && allocated % 2 == 0) {
        void* p = nullptr;
        app.fns().vkMapMemory(app.device(), block.memory, 0, VK_WHOLE_SIZE, 0, &p);
        block.mapped = static_cast<std::byte*>(p) + 100;
        block.user = p;
      }
      ++allocated;
      return VK_SUCCESS;
    };
    opts.device_memory.free = [&](const DeviceMemoryBlock& block) {
      if (block.user) app.fns().vkUnmapMemory(app.device(), block.memory);
      app.fns().vkFreeMemory(app.device(), block.memory, nullptr);
      ++freed;
    };
    auto ctx = Context::adopt(app.external(), opts);
    info = &ctx.device();
    auto x = ctx.tensor({5000}, std::vector<float>(5000, 2.0f));
    auto y = ctx.tensor({5000}, std::vector<float>(5000, 1.0f));
    auto seq = ctx.sequence();
    record_saxpy(seq, saxpy(ctx), x, y, 0.5f);
    seq.download(y).eval();
    EXPECT_EQ(seq.read<float>(y)[4999], 2.0f);
    EXPECT_EQ(Seq2Seq::load(ctx, test::source_path(kDates)).translate({"21/11/26"})[0], "2026-11-21");
    EXPECT_EQ(ctx.memory_stats().device_memory_blocks, static_cast<std::uint32_t>(allocated - freed));
    ContextOptions half;
    half.device_memory.free = [](const DeviceMemoryBlock&) {};
    test::expect_error([&] { Context::adopt(app.external(), half); }, ErrorCode::invalid_argument, {"both allocate and free"});
  }
  EXPECT_GT(allocated, 0);
  EXPECT_EQ(freed, allocated);
  expect_no_app_messages(app);
}

// ---------------------------------------------------------------------------- debug labels

TEST(DebugLabels, OneLabelPerDispatchAndRegions) {
  auto& ctx = test::context();
  ASSERT_TRUE(ctx.features().debug_labels) << "the test context's instance has VK_EXT_debug_utils";
  auto x = ctx.tensor({64}, std::vector<float>(64, 1.0f));
  auto y = ctx.tensor({64}, std::vector<float>(64, 0.0f));
  auto seq = ctx.sequence({.label = "labelled"});
  seq.begin_label("two saxpys");
  record_saxpy(seq, saxpy(ctx), x, y, 1.0f);
  record_saxpy(seq, saxpy(ctx), x, y, 1.0f);
  seq.end_label().begin_label("left open");  // closed when the recording ends
  record_saxpy(seq, saxpy(ctx), x, y, 1.0f);
  seq.download(y).eval();
  EXPECT_EQ(seq.read<float>(y)[63], 3.0f);
  EXPECT_EQ(seq.stats().debug_labels, 3u + 2u + 1u);  // dispatches, regions, the sequence
}

TEST(DebugLabels, ObjectNamesShowInValidationMessages) {
  if (test::validation_disabled()) GTEST_SKIP() << "validation disabled";
  std::vector<std::string> seen;
  Context ctx(test::options_collecting_errors(seen));
  ASSERT_TRUE(ctx.features().debug_labels);
  const Tensor t = ctx.tensor({16}, DType::f32, "named_for_the_debugger");
  const auto& f = ctx.impl().fns;
  VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pi.queueFamilyIndex = ctx.device().compute_queue_family;
  VkCommandPool pool = VK_NULL_HANDLE;
  ASSERT_EQ(f.vkCreateCommandPool(ctx.vk_device(), &pi, nullptr, &pool), VK_SUCCESS);
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool;
  ai.commandBufferCount = 1;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  f.vkAllocateCommandBuffers(ctx.vk_device(), &ai, &cb);
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  f.vkBeginCommandBuffer(cb, &bi);
  f.vkCmdFillBuffer(cb, t.storage().buffer.handle, 0, 4096, 0);  // invalid: beyond the buffer
  f.vkEndCommandBuffer(cb);
  f.vkDestroyCommandPool(ctx.vk_device(), pool, nullptr);
  ASSERT_FALSE(seen.empty());
  EXPECT_NE(seen.front().find("named_for_the_debugger"), std::string::npos) << seen.front();
}

TEST(DebugLabels, OffWithoutTheExtensionAndAClearErrorWhenAskedFor) {
  test::AppDevice app(/*validation=*/false);  // no VK_EXT_debug_utils on the app's instance
  {
    auto ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    EXPECT_FALSE(ctx.features().debug_labels);
    auto seq = ctx.sequence({.label = "unlabelled"});
    seq.begin_label("ignored");
    seq.fill(ctx.tensor({4}, DType::u32), 1).end_label().eval();
    EXPECT_EQ(seq.stats().debug_labels, 0u);
    ContextOptions asked{.disable_pipeline_cache = true, .debug_labels = true};
    test::expect_error([&] { Context::adopt(app.external(), asked); }, ErrorCode::missing_feature, {"VK_EXT_debug_utils"});
  }
  app.destroy();
}
