#!/usr/bin/python3
"""Minimal, strict safetensors reader/writer for vkrnn's tools (Debian has no python3-safetensors).

Depends on numpy only; torch tensors are accepted (and bfloat16 returned) when torch is installed.

    import safetensors_io as st
    st.save("w.safetensors", {"w": np.zeros((2, 3), np.float32), "b": st.BF16.from_float32(x)},
            metadata={"format": "pt"})
    tensors = st.load("w.safetensors")                   # {name: np.ndarray | st.BF16}
    tensors, meta = st.load_with_metadata("w.safetensors", bf16="float32")

bfloat16: numpy has no such dtype, so BF16 tensors travel as st.BF16 (uint16 bit patterns), or as
torch.bfloat16 tensors (save accepts them; load(bf16="torch") returns them), or widened to float32
(load(bf16="float32"), lossless).

The reader applies the same rules as the C++ reader (src/io/safetensors.cpp): exact byte counts,
no overlaps or gaps, no duplicate keys, string-only metadata; violations raise ValueError naming
the file and the tensor.

CLI: safetensors_io.py --dump FILE | --selftest-write FILE | --selftest-read FILE | --expect-invalid FILE...
"""

import json
import math
import os
import struct
import sys
import tempfile

import numpy as np

MAX_HEADER_BYTES = 100 << 20
METADATA_KEY = "__metadata__"

# safetensors dtype name -> numpy dtype (little-endian). BF16 is handled separately.
_ST_TO_NUMPY = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_DTYPE_SIZE = {**{k: v.itemsize for k, v in _ST_TO_NUMPY.items()}, "BF16": 2}
_NUMPY_TO_ST = {v.newbyteorder("="): k for k, v in _ST_TO_NUMPY.items()}


class BF16:
    """A bfloat16 tensor held as its uint16 bit patterns."""

    def __init__(self, bits):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError(f"BF16 wants uint16 bit patterns, got {bits.dtype}")
        self.bits = np.ascontiguousarray(bits)

    @property
    def shape(self):
        return self.bits.shape

    @staticmethod
    def from_float32(values):
        """Rounds float32 values to bfloat16, to nearest even (NaN stays a quiet NaN)."""
        x = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        rounded = ((x + np.uint32(0x7FFF) + ((x >> 16) & 1)) >> 16).astype(np.uint16)
        nan = (x & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        quiet = ((x >> 16) | 0x40).astype(np.uint16)
        return BF16(np.where(nan, quiet, rounded).astype(np.uint16))

    def to_float32(self):
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def __repr__(self):
        return f"BF16(shape={self.shape})"


def _is_torch_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_storable(name, value):
    """(dtype name, shape, little-endian bytes) for one tensor."""
    if _is_torch_tensor(value):
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            value = BF16(t.view(torch.int16).numpy().view(np.uint16))
        else:
            value = t.numpy()
    if isinstance(value, BF16):
        return "BF16", value.shape, value.bits.astype("<u2").tobytes()
    arr = np.asarray(value)
    key = arr.dtype.newbyteorder("=")
    if key not in _NUMPY_TO_ST:
        raise TypeError(f"tensor {name!r}: unsupported dtype {arr.dtype} "
                        f"(supported: {', '.join(_ST_TO_NUMPY)} and BF16)")
    dtype = _NUMPY_TO_ST[key]
    return dtype, arr.shape, np.ascontiguousarray(arr, dtype=_ST_TO_NUMPY[dtype]).tobytes()


def serialize(tensors, metadata=None):
    """The bytes of a safetensors file holding tensors ({name: array}) in the dict's order."""
    header = {}
    chunks = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor name {name!r}: must be a non-empty string")
        if name == METADATA_KEY:
            raise ValueError(f"tensor name {name!r} is reserved for metadata")
        dtype, shape, data = _to_storable(name, value)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"metadata {k!r}: {v!r}: keys and values must be strings")
        header[METADATA_KEY] = dict(metadata)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data buffer 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, tensors, metadata=None):
    """Writes tensors ({name: numpy array | BF16 | torch tensor}) and string metadata to path."""
    data = serialize(tensors, metadata)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # readers never see a half-written file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _reject_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _is_uint(x):
    return type(x) is int and x >= 0  # bool is an int subclass: excluded by the type test


def parse(data, origin="<bytes>", bf16="bits"):
    """(tensors, metadata) from the bytes of a safetensors file. See load()."""
    def fail(msg, tensor=None):
        where = f"tensor {tensor!r}: " if tensor is not None else ""
        return ValueError(f"safetensors {origin!r}: {where}{msg}")

    if bf16 not in ("bits", "float32", "torch"):
        raise ValueError(f"bf16 must be 'bits', 'float32' or 'torch', not {bf16!r}")
    if len(data) < 8:
        raise fail(f"file is {len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", data, 0)
    if n > MAX_HEADER_BYTES:
        raise fail(f"header length {n} exceeds the {MAX_HEADER_BYTES} byte limit")
    if n > len(data) - 8:
        raise fail(f"header length {n} exceeds the {len(data) - 8} bytes after the length field")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"),
                            object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fail(f"invalid JSON header: {e}") from None
    if not isinstance(header, dict):
        raise fail(f"header must be a JSON object, found {type(header).__name__}")
    buffer = memoryview(data)[8 + n:]

    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail(f"{METADATA_KEY} must be an object of strings")

    spans = []
    tensors = {}
    for name, entry in header.items():
        if not name:
            raise fail("empty tensor name", name)
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"entry must be an object with exactly dtype, shape, data_offsets; "
                       f"found {entry!r:.100}", name)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_SIZE:
            raise fail(f"unknown dtype {dtype!r:.40} (supported: {', '.join(_DTYPE_SIZE)})", name)
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise fail(f"shape must be a list of non-negative integers, found {shape!r:.100}", name)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_uint(o) for o in offsets)):
            raise fail(f"data_offsets must be two non-negative integers, found {offsets!r:.100}",
                       name)
        begin, end = offsets
        nonzero = math.prod(d for d in shape if d)
        if nonzero * _DTYPE_SIZE[dtype] >= 1 << 64:
            raise fail(f"shape {shape} overflows the byte count", name)
        nbytes = 0 if 0 in shape else nonzero * _DTYPE_SIZE[dtype]
        if begin > end:
            raise fail(f"data_offsets [{begin}, {end}] has begin > end", name)
        if end - begin != nbytes:
            raise fail(f"data_offsets [{begin}, {end}] span {end - begin} bytes, but shape "
                       f"{shape} of {dtype} needs {nbytes}", name)
        if end > len(buffer):
            raise fail(f"data_offsets [{begin}, {end}] extend beyond the {len(buffer)}-byte "
                       f"data buffer", name)
        spans.append((begin, end, name))
        raw = bytes(buffer[begin:end])
        if dtype == "BF16":
            value = BF16(np.frombuffer(raw, dtype="<u2").astype(np.uint16).reshape(shape))
            if bf16 == "float32":
                value = value.to_float32()
            elif bf16 == "torch":
                import torch

                value = torch.from_numpy(value.bits.view(np.int16).copy()).view(torch.bfloat16)
        else:
            value = np.frombuffer(raw, dtype=_ST_TO_NUMPY[dtype]).reshape(shape).copy()
            if dtype == "BOOL" and value.view(np.uint8).max(initial=0) > 1:
                raise fail("BOOL bytes must be 0 or 1", name)
        tensors[name] = value

    covered = 0
    previous = None
    for begin, end, name in sorted(spans):
        if begin < covered:
            raise fail(f"data_offsets [{begin}, {end}] overlap tensor {previous!r}", name)
        if begin > covered:
            raise fail(f"data_offsets [{begin}, {end}] leave a gap of {begin - covered} bytes",
                       name)
        covered, previous = end, name
    if covered != len(buffer):
        raise fail(f"{len(buffer) - covered} trailing bytes after the last tensor")
    return tensors, dict(metadata)


def load_with_metadata(path, bf16="bits"):
    """(tensors, metadata). bf16: 'bits' (BF16 objects), 'float32' or 'torch'."""
    with open(path, "rb") as f:
        data = f.read()
    return parse(data, path, bf16)


def load(path, bf16="bits"):
    """{name: numpy array (BF16 per the bf16 argument)}; raises ValueError on a malformed file."""
    return load_with_metadata(path, bf16)[0]


# --- self test shared with tests/test_safetensors.cpp (keep the two in sync) -------------------

def _fixture():
    f32 = np.float32
    inf, nan = float("inf"), float("nan")
    with np.errstate(over="ignore"):  # 70000 overflows float16 on purpose
        f16 = np.array([[0.0, -0.0, 1.0, -2.5, 65504.0], [2.0 ** -14, 2.0 ** -24, 0.1, 70000.0, nan]],
                       f32).astype(np.float16)
    tensors = {
        "f32": np.array([[-1.5, 0.0, 1.0 / 3.0], [3.4028234663852886e38, 1e-45, -0.0]], f32),
        "f32_special": np.array([inf, -inf, nan], f32),
        # float32 -> float16 rounding (numpy's) must agree with vkrnn::float_to_half.
        "f16": f16,
        # 1 + 2^-8 and 1 + 3 * 2^-8 are ties: to even gives 1.0 and 1.015625.
        "bf16": BF16.from_float32(np.array([1.0, 3.14159265, -1e30, 1.00390625, 1.01171875], f32)),
        "f64": np.array([1.0 / 3.0, 1e300, -2.0], np.float64),
        "i64": np.array([-(2 ** 63), 2 ** 63 - 1, 0, -1], np.int64),
        "i32": np.array([[-(2 ** 31), 2 ** 31 - 1], [7, -7]], np.int32),
        "i16": np.array([-32768, 32767, 1], np.int16),
        "i8": np.array([-128, 127, 0], np.int8),
        "u8": np.array([0, 1, 128, 255], np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(42.5, f32),
        "empty": np.zeros((0, 3), f32),
        "\u00fcn\u00efcode.weight": np.array([7.0], f32),
    }
    metadata = {"format": "pt", "unicode": "h\u00e9llo \u2713"}
    return tensors, metadata


def _check_fixture(tensors, metadata):
    """Empty list when tensors/metadata equal the fixture, else the differences."""
    want, want_meta = _fixture()
    problems = []
    if metadata != want_meta:
        problems.append(f"metadata {metadata!r} != {want_meta!r}")
    if set(tensors) != set(want):
        problems.append(f"names {sorted(tensors)} != {sorted(want)}")
    for name, w in want.items():
        if name not in tensors:
            continue
        g = tensors[name]
        if isinstance(w, BF16):
            ok = isinstance(g, BF16) and g.shape == w.shape and np.array_equal(g.bits, w.bits)
        else:
            ok = (isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape
                  and g.tobytes() == w.tobytes())  # bitwise: NaN and -0.0 included
        if not ok:
            problems.append(f"tensor {name!r}: got {g!r}, want {w!r}")
    return problems


def _expect_invalid(paths):
    """0 when every file is rejected with ValueError (used by the C++ tests' malformed files)."""
    failures = 0
    for path in paths:
        try:
            load(path)
            print(f"accepted malformed file {path}", file=sys.stderr)
            failures += 1
        except ValueError:
            pass
        except Exception as e:  # anything else is a reader bug
            print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _main(argv):
    if len(argv) >= 3 and argv[1] == "--expect-invalid":
        return _expect_invalid(argv[2:])
    if len(argv) != 3 or argv[1] not in ("--dump", "--selftest-write", "--selftest-read"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    mode, path = argv[1], argv[2]
    if mode == "--selftest-write":
        save(path, *_fixture())
        return 0
    tensors, metadata = load_with_metadata(path)
    if mode == "--dump":
        for name, t in tensors.items():
            kind = "BF16" if isinstance(t, BF16) else t.dtype
            print(f"{name}: {kind} {list(t.shape)}")
        for k, v in metadata.items():
            print(f"{METADATA_KEY}[{k!r}] = {v!r}")
        return 0
    problems = _check_fixture(tensors, metadata)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
