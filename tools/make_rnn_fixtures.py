#!/usr/bin/python3
"""Builds torch.nn.RNN / LSTM / GRU modules for a grid of configurations, runs them, and writes
one safetensors file per configuration for tests/test_rnn_torch.cpp:

  weights    the module's state_dict, names unchanged (weight_ih_l0, bias_hh_l1_reverse, ...), F32
  input      [B, T, input_size] F32          lengths  [B] I64 (only for ragged cases)
  h0 / c0    F32 (only where the case has them)
  output     [B, T, D*H_out] F32   h_n [L*D, B, H_out] F32   c_n [L*D, B, H] F32 (LSTM)
  output_f32, h_n_f32, c_n_f32: the same computed by torch in float32

output / h_n / c_n come from the same module converted to float64 (the float32 weights convert
exactly), so they are PyTorch's answer without float32 rounding; the *_f32 tensors are what
PyTorch itself gives in float32. Ragged cases go through pack_padded_sequence(enforce_sorted=False)
and pad_packed_sequence(total_length=T), as applications do. The metadata holds the
configuration. index.json lists the files.

Usage: make_rnn_fixtures.py OUT_DIR
Without torch: exit 0 after saying so (the test then skips), unless VKRNN_REQUIRE_TORCH=1, in
which case exit 1 (CI must not silently skip the parity tests).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (cell, input, hidden, layers, bidirectional, bias, proj, batch, steps, lengths, h0)
# lengths: None = all T without packing, "ragged" = random lengths in [1, T] with max T,
# "equal" = all T through pack_padded_sequence.
CASES = [
    ("gru", 5, 7, 1, False, True, 0, 3, 6, "ragged", True),
    ("gru", 4, 16, 2, True, True, 0, 4, 9, "ragged", True),
    ("gru", 300, 33, 3, True, False, 0, 16, 12, "ragged", False),
    ("gru", 300, 1024, 1, False, True, 0, 1, 3, None, True),
    ("gru", 64, 256, 1, True, True, 0, 3, 10, "equal", False),
    ("lstm", 3, 8, 1, False, True, 0, 2, 5, None, True),
    ("lstm", 6, 9, 2, True, True, 4, 3, 7, "ragged", True),
    ("lstm", 5, 5, 3, False, False, 3, 4, 6, "ragged", True),
    ("lstm", 64, 256, 1, True, True, 0, 2, 20, "ragged", True),
    ("lstm", 16, 64, 1, False, True, 0, 2, 512, "ragged", True),
    ("lstm", 1, 1, 2, True, True, 0, 1, 4, None, False),
    ("rnn_tanh", 5, 6, 2, True, True, 0, 5, 8, "ragged", False),
    ("rnn_tanh", 7, 64, 1, True, True, 0, 16, 64, "ragged", True),
    ("rnn_relu", 1, 1, 1, False, True, 0, 1, 4, None, False),
    ("rnn_relu", 12, 31, 2, True, True, 0, 3, 11, "ragged", True),
    ("rnn_relu", 5, 7, 3, False, False, 0, 2, 5, "equal", True),
]


def build(torch, cell, input_size, hidden, layers, bidir, bias, proj):
    nn = torch.nn
    common = dict(num_layers=layers, bidirectional=bidir, bias=bias, batch_first=True)
    if cell == "gru":
        return nn.GRU(input_size, hidden, **common)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden, proj_size=proj, **common)
    return nn.RNN(input_size, hidden, nonlinearity="tanh" if cell == "rnn_tanh" else "relu", **common)


def run(torch, module, x, lengths, h0, c0, total_length):
    utils = torch.nn.utils.rnn
    state = None
    if h0 is not None:
        state = (h0, c0) if c0 is not None else h0
    if lengths is None:
        out, final = module(x, state)
    else:
        packed = utils.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out_packed, final = module(packed, state)
        out, _ = utils.pad_packed_sequence(out_packed, batch_first=True, total_length=total_length)
    if isinstance(final, tuple):
        return out, final[0], final[1]
    return out, final, None


def make_case(torch, index, case, out_dir):
    cell, input_size, hidden, layers, bidir, bias, proj, batch, steps, lengths_kind, with_h0 = case
    torch.manual_seed(1000 + index)
    module = build(torch, cell, input_size, hidden, layers, bidir, bias, proj).float().eval()
    d = 2 if bidir else 1
    h_out = proj if proj else hidden
    x = torch.randn(batch, steps, input_size)
    lengths = None
    if lengths_kind == "ragged":
        lengths = torch.randint(1, steps + 1, (batch,), dtype=torch.int64)
        lengths[0] = steps  # pad_packed_sequence pads to the longest; total_length keeps T anyway
    elif lengths_kind == "equal":
        lengths = torch.full((batch,), steps, dtype=torch.int64)
    h0 = torch.randn(layers * d, batch, h_out) if with_h0 else None
    c0 = torch.randn(layers * d, batch, hidden) if (with_h0 and cell == "lstm") else None

    tensors = {}
    for name, value in module.state_dict().items():
        tensors[name] = value.detach().numpy().astype("float32")
    with torch.inference_mode():
        out32, hn32, cn32 = run(torch, module, x, lengths, h0, c0, steps)
        m64 = build(torch, cell, input_size, hidden, layers, bidir, bias, proj).double().eval()
        m64.load_state_dict({k: v.double() for k, v in module.state_dict().items()})
        dbl = lambda t: None if t is None else t.double()  # noqa: E731
        out64, hn64, cn64 = run(torch, m64, x.double(), lengths, dbl(h0), dbl(c0), steps)

    tensors["input"] = x.numpy()
    if lengths is not None:
        tensors["lengths"] = lengths.numpy()
    if h0 is not None:
        tensors["h0"] = h0.numpy()
    if c0 is not None:
        tensors["c0"] = c0.numpy()
    tensors["output"] = out64.numpy().astype("float32")
    tensors["h_n"] = hn64.numpy().astype("float32")
    tensors["output_f32"] = out32.numpy()
    tensors["h_n_f32"] = hn32.numpy()
    if cn64 is not None:
        tensors["c_n"] = cn64.numpy().astype("float32")
        tensors["c_n_f32"] = cn32.numpy()
    metadata = {
        "cell": cell,
        "input_size": str(input_size),
        "hidden_size": str(hidden),
        "num_layers": str(layers),
        "bidirectional": str(int(bidir)),
        "bias": str(int(bias)),
        "proj_size": str(proj),
        "batch": str(batch),
        "steps": str(steps),
        "lengths": lengths_kind or "none",
        "torch_version": torch.__version__,
    }
    name = f"rnn_{index:02d}_{cell}.safetensors"
    st.save(os.path.join(out_dir, name), tensors, metadata=metadata)
    return name


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    index_path = os.path.join(out_dir, "index.json")
    try:
        import torch
        global st
        import safetensors_io as st  # needs numpy, which comes with python3-torch
    except ImportError as e:
        if os.environ.get("VKRNN_REQUIRE_TORCH") == "1":
            print(f"make_rnn_fixtures: VKRNN_REQUIRE_TORCH=1 but torch cannot be imported ({e}); "
                  "install python3-torch", file=sys.stderr)
            return 1
        if os.path.exists(index_path):
            os.remove(index_path)  # never leave stale fixtures behind a missing torch
        print(f"make_rnn_fixtures: torch not available ({e}); no fixtures written, the torch "
              "parity tests will skip")
        return 0
    torch.set_num_threads(1)  # deterministic and cheap; these are tiny problems
    names = [make_case(torch, i, case, out_dir) for i, case in enumerate(CASES)]
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"torch_version": torch.__version__, "files": names}, f, indent=1)
    os.replace(tmp, index_path)
    print(f"make_rnn_fixtures: wrote {len(names)} fixtures to {out_dir} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
