#!/usr/bin/python3
"""PyTorch baseline for the standard workloads (/work/shared/workloads.md, mirrored in
bench/SCHEMA.md): runs the same rows as vkrnn-bench, with the same row names, and writes the
same JSON schema (bench/schema.json), so bench/compare.py can put both side by side.

Fairness (workloads.md, "Reference points"): torch.set_num_threads(os.cpu_count()), fp32 under
torch.inference_mode(), and the BLAS library torch actually loaded (read from /proc/self/maps
after a matmul) plus the thread count are named in every row.

W3 model (the end-to-end greedy decode): tools/vkrnn_models.py's BahdanauSeq2Seq, the
reference module of vkrnn's "bahdanau_seq2seq" format (docs/model-format.md), with the W3 sizes:
vocab 8000, E = 256, bidirectional GRU encoder He = 256 per direction over S = 32 source tokens,
GRU decoder Hd = 256, additive attention A = 256, output Linear(Hd + 2 He + E -> 8000).
vkrnn-bench (bench/w3_seq2seq.cpp) loads the same architecture with the same sizes through
Seq2Seq, so both tools run the same equations:
  encode:  m = BiGRU(src_embedding(x)); K = W_k m (once per source, inside the timed decode);
           s_0 = tanh(W_b bwd_0 + b_b)
  step t:  e = v . tanh(K + W_q s_{t-1} + b_q); a = masked_softmax(e); c_t = sum_s a_s m_s;
           s_t = GRU([tgt_embedding(y_{t-1}); c_t], s_{t-1});
           logits = W_o [s_t; c_t; tgt_embedding(y_{t-1})] + b_o; y_t = argmax(logits)
  32 steps from BOS, no early stop (every row feeds back its own argmax). One repetition is the
  whole decode, encode included. Weights: PyTorch's default init (vkrnn-bench draws its own
  random weights from the same ranges); the cost does not depend on their values.
  Beam rows (param beam = K = 4): the same model and sources, beam search of width K for 32
  steps over B * K rows at once (build_w3's search(); bench/SCHEMA.md compares it with vkrnn's).
  Streamed rows (param stream_steps, W3.b1 fp32): the same decode hands its tokens to the host
  (Tensor.tolist()) every stream_steps steps, as vkrnn's greedy() with on_step does, and the row
  adds first_token_us, from the call to the first tokens' arrival on the host (on CUDA the
  tolist() waits for the GPU).
"""
import argparse
import datetime
import fnmatch
import json
import math
import os
import platform
import statistics
import sys
import time

SCHEMA_VERSION = 1
COPY_BYTES = 64 << 20  # ceiling copy: 64 MiB source, read + write counted


# ---------------------------------------------------------------------------------------------
# The row grid: one function shared by --list and the runner. Names must match vkrnn-bench's
# (bench/workloads.cpp): "<id>/<k>=<v>,..." with params in this order, bools as true/false.

def fmt_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def row_name(wid, params):
    return wid + "/" + ",".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def all_rows():
    rows = []
    for variant in ("dot", "general", "additive"):
        for b in (1, 16):
            for s in (64, 512, 4096):
                for h in (256, 512):
                    rows.append((f"W1.{variant}", {"B": b, "S": s, "H": h}))
    for cell in ("gru", "lstm", "rnn"):
        for b in (1, 16):
            for h in (256, 512, 1024):
                for bits in (32, 16, 8):  # vkrnn-bench's fp32, fp16 and int8 rows
                    p = {"B": b, "T": 64, "H": h}
                    if bits != 32:
                        p["weight_bits"] = bits
                    rows.append((f"W2.{cell}", p))
    for beam in (0, 4):  # greedy, then beam search with K = 4
        for b in (1, 16):
            for bits in (32, 16, 8):  # vkrnn-bench's fp32, fp16 and int8 rows
                p = {"B": b, "S": 32, "steps": 32, "E": 256, "H": 256, "vocab": 8000}
                if beam:
                    p["beam"] = beam
                if bits != 32:
                    p["weight_bits"] = bits
                rows.append((f"W3.b{b}", p))
    for k in (1, 8):  # vkrnn-bench's streamed rows (bench/w3_seq2seq.cpp)
        rows.append(("W3.b1", {"B": 1, "S": 32, "steps": 32, "E": 256, "H": 256, "vocab": 8000,
                               "stream_steps": k}))
    for s in (256, 1024, 4096, 16384):
        for causal in (False, True):
            rows.append(("W4", {"B": 1, "S": s, "d": 64, "causal": causal}))
    for b in (1, 16):  # bench/k_kernels.cpp: the W3 decode step's output projection and GRU
        for bits in (32, 16, 8):
            p = {"B": b, "N": 8000, "K": 1024}
            if bits != 32:
                p["weight_bits"] = bits
            rows.append(("K.gemv", p))
    for b in (1, 16):
        for bits in (32, 16, 8):
            p = {"B": b, "I": 768, "H": 256}
            if bits != 32:
                p["weight_bits"] = bits
            rows.append(("K.gru", p))
    return rows


def matches(wid, name, patterns):
    """A pattern selects a row when it is a glob matching the id or the name, or a prefix of the
    name ending at a boundary ("W2" and "W1.dot/B=1," select, "W3.b1" does not select W3.b16)."""
    if not patterns:
        return True
    for p in patterns:
        if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(wid, p):
            return True
        if name.startswith(p) and (len(name) == len(p) or p[-1] in "./,=" or name[len(p)] in "./,="):
            return True
    return False


def precision(p):
    return {32: "fp32", 16: "fp16", 8: "int8"}[p.get("weight_bits", 32)]


def w3_weight_bytes_per_token(p):
    """Weights one decoded token reads (SCHEMA.md): per step the output projection, the decoder
    GRU and the attention query projection + v, shared by the B rows, plus the token's embedding
    row (beam search: its K hypotheses' rows). int8 (quantize_dynamic of nn.Linear and nn.GRU):
    those matrices 1 byte per weight (one scale per tensor, not counted), biases, v and
    embeddings fp32; fp16 (CUDA, model.half()): every tensor 2 bytes."""
    B, E, H, V = p["B"], p["E"], p["H"], p["vocab"]
    bits = p.get("weight_bits", 32)
    w, f = bits // 8, 2 if bits == 16 else 4  # matrices, everything else
    M = 2 * H
    output = V * (H + M + E) * w + V * f
    gru = (3 * H * (E + M) + 3 * H * H) * w + 6 * H * f
    query = H * H * w + 2 * H * f
    return (output + gru + query) / B + p.get("beam", 1) * E * f


FOOTPRINT = 64 << 20  # K rows: one repetition runs over at least the copy ceiling's source


def k_bytes(wid, p):
    """K rows (bench/k_kernels.cpp): (copies, bytes read + written by one op). Weights at their
    storage size plus the fp32 bias (and vkrnn's int8 per-row scales), inputs read, outputs
    written; copies of the weights make one repetition touch at least FOOTPRINT bytes."""
    f, B, bits = 4, p["B"], p.get("weight_bits", 32)
    if wid == "K.gemv":
        N, K = p["N"], p["K"]
        once = N * K * bits / 8 + N * f + (N * f if bits == 8 else 0) + B * K * f + B * N * f
    else:
        I, H = p["I"], p["H"]
        once = (3 * H * (I + H) * bits / 8 + 6 * H * f + (6 * H * f if bits == 8 else 0) +
                B * (I + H) * f + B * H * f)
    return max(1, math.ceil(FOOTPRINT / once)), once


# Work per repetition (the same formulas as bench/w*.cpp; documented in SCHEMA.md).
def work(wid, p):
    """Returns (bytes, flops, tokens, steps); 0 = not reported for this row. bytes: read (W1),
    read + written (K)."""
    f = 4  # fp32
    if wid.startswith("K."):
        copies, once = k_bytes(wid, p)
        if wid == "K.gemv":
            flops = 2.0 * p["B"] * p["N"] * p["K"]
        else:
            flops = 2.0 * p["B"] * 3 * p["H"] * (p["I"] + p["H"])
        return copies * once, copies * flops, 0, 0
    if wid.startswith("W1."):
        B, S, H = p["B"], p["S"], p["H"]
        if wid == "W1.dot":
            return f * (B * S * H + B * H), 4.0 * B * S * H, 0, 0
        if wid == "W1.general":
            return f * (B * S * H + H * H + B * H), 2.0 * B * H * H + 4.0 * B * S * H, 0, 0
        return (f * (2 * B * S * H + H * H + H + B * H), 2.0 * B * H * H + 5.0 * B * S * H, 0, 0)
    if wid.startswith("W2."):
        gates = {"W2.gru": 3, "W2.lstm": 4, "W2.rnn": 1}[wid]
        B, T, H = p["B"], p["T"], p["H"]
        return 0, 4.0 * B * T * gates * H * H, 0, T
    if wid.startswith("W3."):
        return 0, 0, p["B"] * p["steps"], p["steps"]
    if wid == "W4":
        return 0, 4.0 * p["S"] * p["S"] * p["d"], 0, 0
    raise ValueError(wid)


# ---------------------------------------------------------------------------------------------
# Workload builders: each returns a zero-argument callable doing ONE repetition.

def build_w1(torch, wid, p, dev):
    B, S, H = p["B"], p["S"], p["H"]
    h = torch.randn(B, S, H, device=dev)  # keys = values = encoder outputs
    q = torch.randn(B, H, device=dev)
    lengths = torch.full((B,), S, device=dev, dtype=torch.long)
    # The mask is per source (built once, like K): the step applies it.
    pad = torch.arange(S, device=dev)[None, :] >= lengths[:, None]
    W = torch.randn(H, H, device=dev) / math.sqrt(H)
    v = torch.randn(H, device=dev) / math.sqrt(H)
    K = torch.matmul(h, torch.randn(H, H, device=dev).t() / math.sqrt(H))  # W_k h, per source

    def finish(scores):
        alpha = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=1)
        return torch.bmm(alpha.unsqueeze(1), h).squeeze(1)

    if wid == "W1.dot":
        return lambda: finish(torch.bmm(h, q.unsqueeze(2)).squeeze(2))
    if wid == "W1.general":
        return lambda: finish(torch.bmm(h, torch.matmul(q, W.t()).unsqueeze(2)).squeeze(2))

    def additive():
        wq = torch.matmul(q, W.t())
        return finish(torch.matmul(torch.tanh(K + wq.unsqueeze(1)), v))
    return additive


def build_w2(torch, wid, p, dev):
    B, T, H = p["B"], p["T"], p["H"]
    cls = {"W2.gru": torch.nn.GRU, "W2.lstm": torch.nn.LSTM, "W2.rnn": torch.nn.RNN}[wid]
    layer = cls(H, H, num_layers=1).to(dev).eval()
    x = torch.randn(T, B, H, device=dev)
    bits = p.get("weight_bits", 32)
    if bits == 16:
        if dev == "cpu":
            raise RuntimeError("the fp16 row runs on CUDA only (.half())")
        layer, x = layer.half(), x.half()
    if bits == 8:
        if dev != "cpu":
            raise RuntimeError("int8 (quantize_dynamic) runs on the CPU only")
        if cls is torch.nn.RNN:
            raise RuntimeError("quantize_dynamic has no int8 nn.RNN (only GRU and LSTM)")
        layer = torch.ao.quantization.quantize_dynamic(layer, {cls}, dtype=torch.qint8)
    return lambda: layer(x)


def build_w3(torch, wid, p, dev):
    """The W3 decode with tools/vkrnn_models.py's BahdanauSeq2Seq (module docstring). The loop
    is greedy_decode(stop_at_eos=False) without its bookkeeping (stacking every step's logits
    and attention, which vkrnn's decode does not return either): encode(), then step() and
    argmax, feeding back the argmax."""
    tools = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import vkrnn_models as vm
    B, S, steps, V = p["B"], p["S"], p["steps"], p["vocab"]
    model = vm.BahdanauSeq2Seq(V, V, embedding_dim=p["E"], encoder_hidden=p["H"],
                               decoder_hidden=p["H"], attention_dim=p["H"], cell="gru",
                               max_decode_length=steps).to(dev).eval()
    if p.get("weight_bits") == 16:
        if dev == "cpu":
            raise RuntimeError("the fp16 row runs on CUDA only (model.half())")
        model = model.half()
    if p.get("weight_bits") == 8:
        if dev != "cpu":
            raise RuntimeError("int8 (quantize_dynamic) runs on the CPU only")
        # PyTorch's own int8 path: dynamic quantization (int8 weights, activations quantized on
        # the fly) of every Linear and GRU of the same module.
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear, torch.nn.GRU},
                                                       dtype=torch.qint8)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, V, (B, S), generator=g).to(dev)  # non-special ids, batch-first
    lengths = torch.full((B,), S, dtype=torch.long, device=dev)
    bos = torch.full((B,), model.bos_id, dtype=torch.long, device=dev)

    k = p.get("stream_steps")
    K = p.get("beam")

    def search():
        """One beam search of width K over all B sources at once (B * K decoder rows a step),
        as a batched PyTorch decoder does it: the encoder's results repeated K times per row,
        each step's log-softmax added to the hypotheses' scores, the top K of each source row's
        K * V candidates, the state rows gathered from their parents. EOS is a token like any
        other (no early stop; vkrnn's search ran all 32 steps too, its setup checks that). The
        tokens and parents of every step are returned, as vkrnn downloads them; backtracking
        them is host work neither side times."""
        memory = model.encode(src, lengths)
        state = tuple(s.repeat_interleave(K, 1) for s in memory["state"])
        memory = {n: t.repeat_interleave(K, 0) for n, t in memory.items() if n != "state"}
        prev = torch.full((B * K,), model.bos_id, dtype=torch.long, device=dev)
        scores = torch.full((B, K), -math.inf, device=dev)
        scores[:, 0] = 0.0  # one hypothesis, [BOS], to start
        scores = scores.view(-1)
        base = (torch.arange(B, device=dev) * K)[:, None]
        tokens, parents = [], []
        for _ in range(steps):
            logits, _, state = model.step(memory, state, prev)
            candidates = (scores[:, None] + torch.log_softmax(logits.float(), -1)).view(B, K * V)
            top, index = candidates.topk(K, -1)
            rows = (base + torch.div(index, V, rounding_mode="floor")).view(-1)
            state = tuple(s.index_select(1, rows) for s in state)
            prev, scores = (index % V).view(-1), top.view(-1)
            tokens.append(prev)
            parents.append(rows)
        return torch.stack(tokens), torch.stack(parents), scores

    def decode():
        """One decode. Streamed rows (stream_steps k) hand the tokens to the host every k steps
        and return the µs from the call to the first ones' arrival (time_row's first_token_us)."""
        t0 = time.perf_counter_ns()
        first = None
        memory = model.encode(src, lengths)
        state, prev = memory["state"], bos
        tokens = []
        for t in range(steps):
            logits, _, state = model.step(memory, state, prev)
            prev = logits.argmax(-1)
            tokens.append(prev)
            if k and ((t + 1) % k == 0 or t == steps - 1):
                torch.stack(tokens[t // k * k:], 1).tolist()
                if first is None:
                    first = (time.perf_counter_ns() - t0) / 1000.0
        return first if k else torch.stack(tokens, 1)
    return search if K else decode


def build_w4(torch, wid, p, dev):
    S, d = p["S"], p["d"]
    h = torch.randn(p["B"], S, d, device=dev)
    scale = 1.0 / math.sqrt(d)
    future = torch.ones(S, S, dtype=torch.bool, device=dev).triu(1) if p["causal"] else None

    def attend():
        e = torch.bmm(h * scale, h.transpose(1, 2))  # scaling [S,d] beats scaling [S,S]
        if future is not None:
            e.masked_fill_(future, float("-inf"))
        return torch.bmm(torch.softmax(e, dim=2), h)
    return attend


def build_k(torch, wid, p, dev):
    """The K rows' counterparts: nn.Linear and one nn.GRUCell step (fp32; fp16: .half() on CUDA;
    int8: quantize_dynamic of them, the W3 int8 row's path), over as many weight copies as
    vkrnn-bench uses."""
    copies, _ = k_bytes(wid, p)
    B = p["B"]
    bits = p.get("weight_bits", 32)
    if bits == 16 and dev == "cpu":
        raise RuntimeError("the fp16 row runs on CUDA only")
    if bits == 8 and dev != "cpu":
        raise RuntimeError("int8 (quantize_dynamic) runs on the CPU only")
    dtype = torch.float16 if bits == 16 else torch.float32

    def stored(module, cls):
        """module at the row's precision; quantize_dynamic swaps submodules only, hence the
        Sequential around it."""
        module = module.to(dev).eval()
        if bits == 16:
            return module.half()
        if bits == 8:
            return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(module), {cls}, dtype=torch.qint8)[0]
        return module
    if wid == "K.gru":
        cells = [stored(torch.nn.GRUCell(p["I"], p["H"]), torch.nn.GRUCell) for _ in range(copies)]
        x = torch.randn(B, p["I"], device=dev, dtype=dtype)
        h = torch.randn(B, p["H"], device=dev, dtype=dtype)
        return lambda: [c(x, h) for c in cells][-1]
    layers = [stored(torch.nn.Linear(p["K"], p["N"]), torch.nn.Linear) for _ in range(copies)]
    x = torch.randn(B, p["K"], device=dev, dtype=dtype)
    return lambda: [l(x) for l in layers][-1]


BUILDERS = {"W1": build_w1, "W2": build_w2, "W3": build_w3, "W4": build_w4, "K": build_k}


# ---------------------------------------------------------------------------------------------

def loaded_blas():
    """The BLAS/OpenMP libraries mapped into this process (call after a matmul)."""
    libs = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path)
                if any(k in base for k in ("blas", "mkl", "blis", "accelerate")):
                    libs.add(path)
    except OSError:
        return "unknown"
    if not libs:
        return "none mapped (torch's own kernels)"
    # Prefer the real implementation (libopenblasp-r0.3.21.so) over the libblas.so.3 shim,
    # and name its directory, which tells the openmp/pthread/serial build apart.
    real = sorted(libs, key=lambda l: ("libblas.so" in l, l))[0]
    return f"{os.path.basename(os.path.dirname(real))}/{os.path.basename(real)}"


def summarize(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def time_row(torch, fn, dev, reps, warmup, max_seconds=0.0, min_reps=3):
    """Warm-up, then timed repetitions. max_seconds > 0 is a budget for the row, as in
    vkrnn-bench: warm-up stops once it used a tenth of it, and the repetitions are cut (to no
    fewer than min_reps) when the first timed one says the rest would not fit. Returns the
    wall-clock and (CUDA) event times, the process's CPU time over each timed repetition and
    the warm-up count, and the µs to the first token of each timed repetition of a function
    that returns it (the streamed W3 rows; else empty)."""
    cuda = dev.startswith("cuda")
    started = time.perf_counter()
    warmups = 0
    for _ in range(warmup):
        fn()
        warmups += 1
        if cuda:
            torch.cuda.synchronize()
        if max_seconds > 0 and time.perf_counter() - started > max_seconds / 10:
            break
    wall, gpu, cpu, first = [], [], [], []
    while len(wall) < reps:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            c0 = time.process_time_ns()  # every thread of the process (BLAS / OpenMP workers too)
            t0 = time.perf_counter_ns()
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            t1 = time.perf_counter_ns()
            gpu.append(start.elapsed_time(end) * 1000.0)
        else:
            c0 = time.process_time_ns()
            t0 = time.perf_counter_ns()
            result = fn()
            t1 = time.perf_counter_ns()
        if isinstance(result, float):
            first.append(result)
        cpu.append((time.process_time_ns() - c0) / 1000.0)
        wall.append((t1 - t0) / 1000.0)
        if len(wall) == 1 and max_seconds > 0:
            reps = min(reps, max(min_reps, int(max_seconds * 1e6 / max(wall[0], 1.0))))
    return wall, gpu, cpu, warmups, first


def ceilings(torch, dev, reps):
    """PyTorch's counterparts of the device ceilings: a 64 MiB Tensor.copy_ (read + write
    bytes), and the cost of one tiny op (empty_dispatch_us). empty_submit_us is the cost of
    torch.cuda.synchronize() on CUDA, null on the CPU."""
    cuda = dev.startswith("cuda")
    n = COPY_BYTES // 4
    src = torch.rand(n, device=dev)
    dst = torch.empty(n, device=dev)
    copy_wall, copy_gpu, *_ = time_row(torch, lambda: dst.copy_(src), dev, max(reps, 10), 3)
    copy_us = statistics.median(copy_gpu if cuda else copy_wall)
    tiny = torch.zeros(1, device=dev)
    ops = 1000

    def many_tiny():
        for _ in range(ops):
            tiny.add_(1.0)
    op_wall, *_ = time_row(torch, many_tiny, dev, max(reps, 10), 2)
    submit = None
    if cuda:
        sync_wall, *_ = time_row(torch, torch.cuda.synchronize, dev, max(reps, 10), 2)
        submit = statistics.median(sync_wall)
    return {
        "copy_shader_gbps": 2.0 * COPY_BYTES / (copy_us * 1e3),
        "copy_buffer_gbps": None,
        "empty_dispatch_us": statistics.median(op_wall) / ops,
        "empty_submit_us": submit,
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(v, v)
    except OSError:
        pass
    return "other"


def host_info():
    info = {"os": f"{platform.system()} {platform.release()}", "cpu": cpu_model(),
            "cores": os.cpu_count()}
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the row names and exit")
    ap.add_argument("--filter", action="append", default=[],
                    help="row name prefix or glob, or workload id (repeatable), e.g. W1.dot, W2")
    ap.add_argument("--repetitions", type=int, default=20, help="timed repetitions (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repetitions first (default 3)")
    ap.add_argument("--device", action="append", choices=["cpu", "cuda"],
                    help="cpu and/or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default os.cpu_count())")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="time budget per row: fewer repetitions (>= 3) for rows that would "
                         "take longer (default 0: no budget)")
    ap.add_argument("--out", help="write the JSON results here")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the ceiling measurements")
    args = ap.parse_args(argv)

    rows = [(w, p) for w, p in all_rows() if matches(w, row_name(w, p), args.filter)]
    if args.list:
        for w, p in rows:
            print(row_name(w, p))
        return 0
    if args.repetitions < 1 or args.warmup < 0:
        ap.error("--repetitions must be >= 1 and --warmup >= 0")

    try:
        import torch
    except ImportError as e:
        print(f"torch_baseline: PyTorch is not importable ({e}); use /usr/bin/python3 "
              "(Debian's python3-torch)", file=sys.stderr)
        return 77  # the "skipped" exit code ctest is told about

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))

    result = {"schema_version": SCHEMA_VERSION, "tool": "torch_baseline",
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "host": host_info(), "devices": []}
    for dev in devices:
        if dev == "cuda" and not torch.cuda.is_available():
            print("torch_baseline: CUDA requested but not available", file=sys.stderr)
            return 2
        with torch.inference_mode():
            a = torch.randn(256, 256, device=dev)
            (a @ a).sum().item()  # loads the BLAS library before we look for it
            blas = loaded_blas() if dev == "cpu" else f"cuBLAS (CUDA {torch.version.cuda})"
            threads = torch.get_num_threads()
            if dev == "cpu":
                name = f"PyTorch CPU ({blas}, {threads} threads)"
                dtype, vendor = "cpu", cpu_vendor()
            else:
                name = f"PyTorch CUDA ({torch.cuda.get_device_name(0)})"
                dtype, vendor = "discrete", "nvidia"
            backend = {"name": f"torch {torch.__version__}", "blas": blas, "threads": threads}
            entry = {"index": None, "name": name, "vendor": vendor, "vendor_id": None, "device_type": dtype,
                     "driver_name": f"torch {torch.__version__}",
                     "driver_version": torch.__version__,
                     "driver_info": f"{blas}, {threads} threads", "api_version": None,
                     "subgroup_size": None, "timestamps": dev == "cuda", "validation": False,
                     "ceilings": None if args.no_ceilings else ceilings(torch, dev, args.repetitions),
                     "rows": [], "skipped": []}
            print(f"== {name}", file=sys.stderr)
            copy_gbps = (entry["ceilings"] or {}).get("copy_shader_gbps")
            for wid, p in rows:
                rname = row_name(wid, p)
                try:
                    fn = BUILDERS[wid.split(".")[0]](torch, wid, p, dev)
                    wall, gpu, cpu, warmups, first = time_row(torch, fn, dev, args.repetitions, args.warmup,
                                                  args.max_seconds)
                except RuntimeError as e:  # e.g. out of memory: say so, keep going
                    entry["skipped"].append({"name": rname, "reason": str(e).splitlines()[0]})
                    print(f"  {rname}: skipped: {e}", file=sys.stderr)
                    continue
                nbytes, flops, tokens, steps = work(wid, p)
                med = statistics.median(wall)
                gbps = nbytes / (med * 1e3) if nbytes else None
                row = {"id": wid, "name": rname, "params": p, "precision": precision(p),
                       "repetitions": len(wall), "warmup": warmups,
                       "gpu_us": summarize(gpu) if gpu else None, "wall_us": summarize(wall),
                       "record_us": None,
                       "host_cpu_us": summarize(cpu),
                       "host_threads": statistics.median(cpu) / med if med > 0 else None,
                       "gbps": gbps,
                       "gflops": flops / (med * 1e3) if flops else None,
                       "tokens_per_s": tokens / (med * 1e-6) if tokens else None,
                       "us_per_step": med / steps if steps else None,
                       "copy_fraction": gbps / copy_gbps if gbps and copy_gbps else None,
                       "dispatches": None, "submissions": None, "backend": backend}
                if nbytes:
                    row["bytes"] = nbytes
                    if gpu:  # CUDA events: the kernels alone, as vkrnn-bench's timestamps
                        row["gpu_gbps"] = nbytes / (statistics.median(gpu) * 1e3)
                        row["gpu_copy_fraction"] = row["gpu_gbps"] / copy_gbps if copy_gbps else None
                if wid.startswith("W3."):
                    row["weight_bytes_per_token"] = w3_weight_bytes_per_token(p)
                if first:
                    row["first_token_us"] = summarize(first)
                entry["rows"].append(row)
                rate = (f"{row['gbps']:.2f} GB/s" if row["gbps"] else
                        f"{row['tokens_per_s']:.0f} tok/s" if row["tokens_per_s"] else
                        f"{row['gflops']:.2f} GFLOP/s" if row["gflops"] else "")
                print(f"  {rname:40s} {med:12.1f} us  [{min(wall):.1f} .. {max(wall):.1f}]  {rate}",
                      file=sys.stderr)
                if args.out:  # after every row: a run stopped part-way leaves what it finished
                    write_json(args.out, dict(result, devices=result["devices"] + [entry]))
        result["devices"].append(entry)

    if args.out:
        write_json(args.out, result)
    else:
        print(json.dumps(result, indent=1))
    return 0


def write_json(path, doc):
    """Through a temporary file and a rename: a run killed while writing leaves the last
    complete file, not a truncated one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
