#!/usr/bin/python3
"""Traces a PyTorch attention RNN with torch.fx and writes it as vkrnn graphs (model format
version 2, docs/model-format.md). tools/export_torch.py is the front door (export_module).

A seq2seq module provides encode(tokens, lengths) -> (memory, state) and
step(token, state, memory) -> (logits, state[, attention]); a classifier forward(tokens,
lengths) -> logits (or a tuple / dict of outputs). Each method is traced symbolically (fx), and
every traced operation is mapped to graph nodes: modules (nn.Embedding, nn.Linear, nn.GRU /
LSTM / RNN and their cells), tensor functions (cat, tanh, softmax, masked_fill, bmm / matmul,
views) and the usual attention patterns. Anything else is an ExportError naming the module,
the operation and the source line: a model is exported exactly or not at all.

Shapes are tracked symbolically: B (batch) and S (the source / input length) stay symbols,
every feature size is a number.
"""

import contextlib
import dis
import inspect
import math
import operator
import os
import re
import sys

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.rnn as rnn_utils

B, S = "B", "S"
# masked_fill values that make a score vanish after softmax exactly (exp underflows to 0 even in
# float64 for anything below about -745).
MASK_FILL_LIMIT = -1e4


class ExportError(Exception):
    """A module that cannot be exported exactly; the message names where and why."""


# --- tracing ---------------------------------------------------------------------------------

# Functions traced as single calls (their arguments are sizes or packed sequences that fx cannot
# trace through).
LEAF_FUNCTIONS = (rnn_utils.pack_padded_sequence, rnn_utils.pad_packed_sequence, torch.arange, torch.zeros,
                  torch.ones, torch.full)


def _proxy_iter(self):
    # torch 1.13's Proxy.__iter__ indexes bytecode by f_lasti // 2, which is wrong on Python
    # 3.11 (inline caches): find the instruction by offset instead, so `a, b = proxy` unpacks.
    frame = inspect.currentframe().f_back
    for inst in dis.get_instructions(frame.f_code):
        if inst.offset == frame.f_lasti:
            if inst.opname == "UNPACK_SEQUENCE":
                return (self[i] for i in range(inst.argval))
            break
    return self.tracer.iter(self)


class Tracer(fx.Tracer):
    """fx tracing that records each node's module path and source line, keeps torch.nn modules
    as leaves and the LEAF_FUNCTIONS as single calls."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True
        self.proxy_buffer_attributes = True  # buffers (a position table) become get_attr nodes too
        self.module_stack = []

    def call_module(self, m, forward, args, kwargs):
        self.module_stack.append(self.path_of_module(m))
        try:
            out = super().call_module(m, forward, args, kwargs)
        finally:
            self.module_stack.pop()
        # Recurrent modules return tuples: give the caller real tuples of proxies, so that
        # tuple(state), len(state) and unpacking work as on tensors.
        if isinstance(m, nn.LSTM):
            return (out[0], (out[1][0], out[1][1]))
        if isinstance(m, (nn.RNNBase,)):
            return (out[0], out[1])
        if isinstance(m, nn.LSTMCell):
            return (out[0], out[1])
        return out

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        node.meta["vk_module"] = self.module_stack[-1] if self.module_stack else ""
        return node

    @contextlib.contextmanager
    def patched(self):
        saved = [(fx.Proxy, "__iter__", fx.Proxy.__iter__)]
        fx.Proxy.__iter__ = _proxy_iter
        for fn in LEAF_FUNCTIONS:
            def wrapper(*args, _fn=fn, **kwargs):
                if any(isinstance(a, fx.Proxy) for a in list(args) + list(kwargs.values())):
                    out = self.create_proxy("call_function", _fn, args, kwargs)
                    return (out[0], out[1]) if _fn is rnn_utils.pad_packed_sequence else out
                return _fn(*args, **kwargs)
            for mod in list(sys.modules.values()):
                d = getattr(mod, "__dict__", None)
                if not isinstance(d, dict):
                    continue
                for key, value in list(d.items()):
                    if value is fn:
                        saved.append((d, key, value))
                        d[key] = wrapper
        try:
            yield
        finally:
            for owner, key, value in reversed(saved):
                if isinstance(owner, dict):
                    owner[key] = value
                else:
                    setattr(owner, key, value)


class _Call(nn.Module):
    """The module whose forward fx traces: fn(model, *inputs) with named inputs."""

    def __init__(self, model, fn):
        super().__init__()
        self.m = model
        self._fn = fn


def trace(model, fn, names):
    """(fx graph, wrapper module) of fn(model, *names)."""
    # fx traces type(root).forward and needs its parameters named (no *args).
    src = f"def forward(self, {', '.join(names)}):\n    return self._fn(self.m, {', '.join(names)})\n"
    scope = {}
    exec(src, scope)  # noqa: S102 -- a fixed template over fx-safe argument names
    root = type("Call", (_Call,), {"forward": scope["forward"]})(model, fn)
    tracer = Tracer()
    with tracer.patched():
        try:
            graph = tracer.trace(root)
        except ExportError:
            raise
        except Exception as e:  # fx reports data-dependent control flow etc. as TraceError / TypeError
            raise ExportError(f"torch.fx could not trace {getattr(fn, '__name__', 'the method')}: {type(e).__name__}: {e}\n"
                              f"{_user_frame(e.__traceback__)}") from e
    return graph, root


def _user_frame(tb):
    frames = [f for f in __import__("traceback").extract_tb(tb)
              if "/torch/" not in f.filename and not f.filename.endswith("torch_graph.py")]
    if not frames:
        return ""
    f = frames[-1]
    return f"  at {f.filename}:{f.lineno}: {f.line}"


def where(node):
    """'module path, operation, file:line: code' of an fx node, for messages."""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    module = node.meta.get("vk_module", "")
    module = "" if module == "m" else module[2:] if module.startswith("m.") else module  # the wrapper's attribute
    line = ""
    trace_text = node.meta.get("stack_trace") or ""
    # Innermost frame first: the first one of the user's code.
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', trace_text)
    frames = [f for f in frames if "/torch/" not in f[0] and not f[0].startswith("<")
              and not f[0].endswith(("torch_graph.py", "export_torch.py"))]
    if frames:
        path, lineno, code = frames[0]
        line = f" at {os.path.relpath(path) if not path.startswith('<') else path}:{lineno}: {code.strip()}"
    return f"module '{module or '(top level)'}', operation {node.op} '{target}'{line}"


# --- values ---------------------------------------------------------------------------------

class T:
    """A tensor of the graph being written. `view_of`: the tensor this one reshapes."""

    def __init__(self, name, shape, dtype="f32", view_of=None, producer=None, kind=None):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype
        self.view_of, self.producer = view_of, producer
        self.kind = kind  # "tokens", "lengths", "token": the graph's inputs

    def __repr__(self):
        return f"T({self.name}, {list(self.shape)})"


class Mask:
    """positions < lengths (valid=True) or >= lengths (valid=False), shape [B, S] with inserted
    1s (a broadcast over other axes)."""

    def __init__(self, lengths, shape, valid=True):
        self.lengths, self.shape, self.valid = lengths, tuple(shape), valid


class Arange:
    def __init__(self, shape):
        self.shape = tuple(shape)


class LengthsView:
    """lengths with inserted 1s (lengths[:, None])."""

    def __init__(self, lengths, shape):
        self.lengths, self.shape = lengths, tuple(shape)


class Zeros:
    def __init__(self, shape):
        self.shape = tuple(shape)


class Param:
    def __init__(self, name, tensor):
        self.name, self.tensor = name, tensor.detach()
        self.shape = tuple(tensor.shape)


class Packed:
    def __init__(self, x, lengths):
        self.x, self.lengths = x, lengths


class PackedOut:
    def __init__(self, out):
        self.out = out


class Shape:
    def __init__(self, dims):
        self.dims = tuple(dims)


class Transposed:
    """x.transpose(-2, -1) of a [B, S, E] tensor (or heads [B, h, S, d]): only a matmul may read it."""

    def __init__(self, x):
        self.x = x


class AddKQ:
    """keys [B, S, A] + query side [B, 1, A] (additive attention, before tanh)."""

    def __init__(self, keys, query, bias=None):
        self.keys, self.query, self.bias = keys, query, bias
        self.shape = keys.shape


class TanhKQ(AddKQ):
    pass


class MaskedScores:
    def __init__(self, scores, lengths):
        self.scores, self.lengths = scores, lengths
        self.shape = scores.shape


class QK:
    """q k^T * scale of self-attention, [B, (h,) S, S], keys masked by lengths."""

    def __init__(self, q, k, scale=1.0, lengths=None, heads=1):
        self.q, self.k, self.scale, self.lengths, self.heads = q, k, scale, lengths, heads
        self.split = False  # from heads split with view + transpose: [B, h, S, S]

    def with_(self, **kw):
        out = QK(self.q, self.k, self.scale, self.lengths, self.heads)
        out.split = self.split
        out.__dict__.update(kw)
        return out


class SelfWeights:
    def __init__(self, qk):
        self.qk = qk
        self.node = None  # the self_attention node once the weights met their values


class Heads:
    """x [B, S, E] split into heads: [B, h, S, d] (after view + transpose(1, 2))."""

    def __init__(self, x, heads, transposed):
        self.x, self.heads, self.transposed = x, heads, transposed


class HeadsOut:
    """self-attention output per head [B, h, S, d]: transpose(1, 2) + view gives [B, S, E]."""

    def __init__(self, out, heads, transposed=True):
        self.out, self.heads, self.transposed = out, heads, transposed


class Weighted:
    """weights[..., None] * values (a context summed over the source axis next)."""

    def __init__(self, weights, values):
        self.weights, self.values = weights, values


class DotTerms:
    """keys * query[:, None, :] (dot scores summed over the last axis next)."""

    def __init__(self, keys, query):
        self.keys, self.query = keys, query


class PositionTable:
    """A slice of a sinusoidal positional-encoding table: pe[:S] (optionally [None])."""

    def __init__(self, shape):
        self.shape = tuple(shape)


# --- the graph being written -----------------------------------------------------------------

class GraphBuilder:
    def __init__(self, name):
        self.name = name
        self.inputs = {}   # name -> spec
        self.nodes = []
        self.outputs = {}
        self.names = set()       # tensors
        self.node_names = set()
        self.tensors = {}   # name -> T
        self.step_rnns = set()  # rnn nodes in step mode (their output is a view of h_n)

    def fresh(self, base, names=None):
        names = self.names if names is None else names
        base = re.sub(r"[^A-Za-z0-9_.:]", "_", base) or "t"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.add(name)
        return name

    def input(self, name, spec, shape, dtype="f32", kind=None):
        name = self.fresh(name)
        self.inputs[name] = spec
        t = T(name, shape, dtype, kind=kind)
        self.tensors[name] = t
        return t

    def node(self, op, hint, inputs, outputs, options=None, weights=None):
        """outputs: {slot: (shape, dtype)}; returns {slot: T}."""
        name = self.fresh(hint, self.node_names)
        outs, out_names = {}, {}
        for slot, (shape, dtype) in outputs.items():
            t = T(self.fresh(name if len(outputs) == 1 else f"{name}.{slot}"), shape, dtype)
            outs[slot] = t
            out_names[slot] = t.name
        node = {"name": name, "op": op,
                "inputs": {k: ([x.name for x in v] if isinstance(v, list) else v.name) for k, v in inputs.items() if v is not None},
                "outputs": out_names}
        if options:
            node["options"] = options
        if weights:
            node["weights"] = weights
        self.nodes.append(node)
        for t in outs.values():
            t.producer = node
            self.tensors[t.name] = t
        return outs

    def json(self):
        return {"inputs": self.inputs, "nodes": self.nodes, "outputs": self.outputs}

    def shape(self, name):
        return self.tensors[name].shape


class Weights:
    """The tensors the graphs name: module parameters by their state_dict names, and derived
    ones (transposes, splits, identities) under new names."""

    def __init__(self):
        self.tensors = {}

    def add(self, name, tensor):
        t = tensor.detach().to(torch.float64).cpu().contiguous()
        if name in self.tensors:
            if not torch.equal(self.tensors[name], t):
                raise ExportError(f"two different tensors would be named '{name}'")
            return name
        self.tensors[name] = t
        return name


def _dims_str(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _numel_sig(shape):
    fixed, syms = 1, []
    for d in shape:
        if isinstance(d, str):
            syms.append(d)
        else:
            fixed *= d
    return fixed, tuple(sorted(syms))


# --- mapping fx nodes to graph nodes ---------------------------------------------------------

def _name_of(target):
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", str(target))
    return {"__add__": "add", "__radd__": "add", "__iadd__": "add", "iadd": "add", "__mul__": "mul", "__rmul__": "mul",
            "__truediv__": "truediv", "__matmul__": "matmul", "__getitem__": "getitem", "__invert__": "invert",
            "__eq__": "eq", "__lt__": "lt", "__gt__": "gt", "__le__": "le", "__ge__": "ge", "__sub__": "sub",
            "__floordiv__": "floordiv", "__neg__": "neg", "linear": "f_linear"}.get(name, name)


IDENTITY_METHODS = {"contiguous", "float", "cpu", "detach", "clone", "to", "type_as", "cuda", "double"}


class Mapper:
    """Interprets one traced fx graph, writing nodes into `g`."""

    def __init__(self, root, g, weights, step_mode):
        self.root, self.g, self.weights, self.step_mode = root, g, weights, step_mode
        self.env = {}
        self.node = None
        self.sinusoid_cache = {}

    # -- errors and helpers --
    def fail(self, message):
        raise ExportError(f"{where(self.node)}: {message}")

    def param_name(self, qualified):
        return qualified[2:] if qualified.startswith("m.") else qualified

    def module_name(self, target):
        return self.param_name(target)

    def arg(self, a):
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self.arg(a.start), self.arg(a.stop), self.arg(a.step))
        return a

    def tensor(self, v, what="input"):
        if isinstance(v, Zeros):
            self.fail(f"{what}: a zeros tensor made inside the graph is only supported as recurrent state")
        if isinstance(v, SelfWeights):
            return self.self_weights_tensor(v)
        if not isinstance(v, T):
            self.fail(f"{what}: expected a tensor, got {type(v).__name__} (this pattern is not one vkrnn maps)")
        return v

    def hint(self):
        name = self.node.name
        return name[2:] if name.startswith("m_") else name

    def run(self, fx_graph, placeholders):
        out = None
        for node in fx_graph.nodes:
            self.node = node
            if node.op == "placeholder":
                self.env[node] = placeholders[node.target]
            elif node.op == "output":
                out = self.arg(node.args[0])
            else:
                self.env[node] = self.map(node)
        return out

    def map(self, node):
        args = [self.arg(a) for a in node.args]
        kwargs = {k: self.arg(v) for k, v in node.kwargs.items()}
        if node.op == "get_attr":
            obj = self.root
            for part in node.target.split("."):
                obj = getattr(obj, part)
            if not torch.is_tensor(obj):
                self.fail("an attribute that is not a tensor")
            return Param(self.param_name(node.target), obj)
        if node.op == "call_module":
            mod = self.root.get_submodule(node.target)
            return self.call_module(mod, self.module_name(node.target), args, kwargs)
        name = _name_of(node.target)
        if node.op == "call_method" and name in IDENTITY_METHODS:
            return args[0]
        fn = getattr(self, "op_" + name, None)
        if fn is None:
            self.fail(f"'{name}' has no vkrnn mapping")
        return fn(*args, **kwargs)

    # -- views --
    def reshape(self, x, shape):
        x = self.tensor(x)
        shape = tuple(shape)
        if shape == x.shape:
            return x
        if _numel_sig(shape) != _numel_sig(x.shape):
            self.fail(f"reshape of {x.name} {_dims_str(x.shape)} to {_dims_str(shape)}: the element counts differ")
        base = x.view_of or x
        if base.shape == shape:
            return base
        out = self.g.node("reshape", self.hint(), {"x": base}, {"out": (shape, x.dtype)}, {"shape": list(shape)})["out"]
        out.view_of = base
        return out

    def resolve_shape(self, x, sizes):
        """view / reshape sizes (ints, B, S, one -1) against x's shape."""
        sizes = list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)) else list(sizes)
        if sizes.count(-1) > 1:
            self.fail("view with two -1 sizes")
        fixed, syms = _numel_sig(x.shape)
        if -1 in sizes:
            kf, ks = _numel_sig([d for d in sizes if d != -1])
            rest_syms = list(syms)
            for s in ks:
                if s not in rest_syms:
                    self.fail(f"view {sizes} of {_dims_str(x.shape)}: the symbolic sizes do not match")
                rest_syms.remove(s)
            if rest_syms or fixed % kf:
                self.fail(f"view {sizes} of {_dims_str(x.shape)}: -1 would stand for a batch or sequence dimension times a size")
            sizes[sizes.index(-1)] = fixed // kf
        return tuple(sizes)

    def op_view(self, x, *sizes):
        if isinstance(x, (HeadsOut, Heads)):
            return self.merge_heads(x, sizes)
        x = self.tensor(x)
        shape = self.resolve_shape(x, sizes)
        if len(shape) == 4 and len(x.shape) == 3 and shape[0] == B and x.shape[:2] == (B, S) and shape[1] == S:
            return Heads(x, shape[2], transposed=False)  # [B, S, h, d]: a head split
        return self.reshape(x, shape)

    op_reshape = op_view

    def op_flatten(self, x, start_dim=0, end_dim=-1):
        x = self.tensor(x)
        r = len(x.shape)
        s, e = start_dim % r, end_dim % r
        dims = list(x.shape[:s])
        merged = 1
        for d in x.shape[s:e + 1]:
            if isinstance(d, str) and e > s:
                self.fail("flatten over a batch or sequence dimension")
            merged = d if e == s else merged * d
        return self.reshape(x, dims + [merged] + list(x.shape[e + 1:]))

    def op_unsqueeze(self, x, dim):
        if isinstance(x, T) and x.kind == "lengths":
            x = LengthsView(x, x.shape)
        if isinstance(x, (Mask, LengthsView, Arange)):
            shape = list(x.shape)
            shape.insert(dim if dim >= 0 else len(shape) + 1 + dim, 1)
            return self.with_shape(x, shape)
        x = self.tensor(x)
        shape = list(x.shape)
        shape.insert(dim if dim >= 0 else len(shape) + 1 + dim, 1)
        return self.reshape(x, shape)

    def op_squeeze(self, x, dim=None):
        if isinstance(x, Mask):
            shape = [d for i, d in enumerate(x.shape) if not (d == 1 and (dim is None or i == dim % len(x.shape)))]
            return self.with_shape(x, shape)
        x = self.tensor(x)
        if dim is None:
            shape = [d for d in x.shape if d != 1]
        else:
            dim %= len(x.shape)
            shape = [d for i, d in enumerate(x.shape) if not (i == dim and d == 1)]
        return self.reshape(x, shape)

    def with_shape(self, v, shape):
        if isinstance(v, Mask):
            return Mask(v.lengths, shape, v.valid)
        if isinstance(v, LengthsView):
            return LengthsView(v.lengths, shape)
        return Arange(shape)

    def op_permute(self, x, *dims):
        dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else list(dims)
        return self.transpose_like(x, dims)

    def op_transpose(self, x, a, b):
        if isinstance(x, (T, Heads, HeadsOut)):
            r = len(x.shape) if isinstance(x, T) else 4
            a, b = a % r, b % r
            dims = list(range(r))
            dims[a], dims[b] = dims[b], dims[a]
            return self.transpose_like(x, dims)
        self.fail(f"transpose of {type(x).__name__}")

    op_swapaxes = op_transpose

    def transpose_like(self, x, dims):
        if isinstance(x, Heads):
            if sorted(dims[1:3]) == [1, 2] and dims[1:3] == [2, 1] and not x.transposed:
                return Heads(x.x, x.heads, transposed=True)
            if x.transposed and dims == [0, 1, 3, 2]:
                return Transposed(x)
            self.fail("this permutation of attention heads")
        if isinstance(x, HeadsOut):
            if dims == [0, 2, 1, 3]:
                return HeadsOut(x.out, x.heads, transposed=not x.transposed)
            self.fail("this permutation of attention heads")
        x = self.tensor(x)
        r = len(x.shape)
        dims = [d % r for d in dims]
        if r == 3 and dims == [0, 2, 1]:
            return Transposed(x)
        # Moving only size-1 dimensions keeps the element order: a reshape.
        moved = [x.shape[d] for d in dims]
        if [d for d in dims if x.shape[d] != 1] == [d for d in range(r) if x.shape[d] != 1]:
            return self.reshape(x, moved)
        self.fail(f"permutation {dims} of {_dims_str(x.shape)} moves data (only batch-first layouts are supported)")

    def op_getitem(self, x, idx):
        if isinstance(x, (tuple, list)):
            return x[idx]
        if isinstance(x, dict):
            return x[idx]
        if isinstance(x, Shape):
            return x.dims[idx]
        if isinstance(x, Param):
            if isinstance(idx, slice) or (isinstance(idx, tuple) and all(isinstance(i, (slice, type(None))) for i in idx)):
                return self.position_table(x, idx)
            self.fail("indexing a parameter")
        if isinstance(x, PositionTable) and idx is None:
            out = PositionTable((1,) + x.shape)
            out.max_positions = x.max_positions
            return out
        if isinstance(x, T) and x.kind == "lengths":
            x = LengthsView(x, x.shape)
        if isinstance(x, (Mask, LengthsView, Arange)):
            return self.index_broadcast(x, idx)
        x = self.tensor(x)
        return self.index(x, idx)

    def index_broadcast(self, x, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        shape, i = [], 0
        for item in idx:
            if item is None:
                shape.append(1)
            elif isinstance(item, slice) and item == slice(None):
                shape.append(x.shape[i])
                i += 1
            elif item is Ellipsis:
                n = len(x.shape) - (len([t for t in idx if t is not None]) - 1)
                shape.extend(x.shape[i:i + n])
                i += n
            else:
                self.fail(f"indexing a mask / lengths / arange with {item!r}")
        shape.extend(x.shape[i:])
        return self.with_shape(x, shape)

    def index(self, x, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            n = len(x.shape) - (len([t for t in idx if t is not None]) - 1)
            idx = idx[:k] + (slice(None),) * n + idx[k + 1:]
        cur = x
        axis = 0  # axis of `cur` the next item applies to
        final_shape = []
        for item in idx:
            if item is None:
                final_shape.append(1)
                continue
            d = cur.shape[axis]
            if isinstance(item, slice):
                start, stop, step = item.start, item.stop, item.step
                if step not in (None, 1):
                    self.fail("a strided slice")
                if (start in (None, 0)) and (stop is None or (not isinstance(d, str) and isinstance(stop, int) and stop >= d) or stop == d):
                    final_shape.append(d)
                    axis += 1
                    continue
                if isinstance(d, str):
                    self.fail(f"slicing the {d} dimension")
                start = 0 if start is None else (start + d if start < 0 else start)
                stop = d if stop is None else (stop + d if stop < 0 else min(stop, d))
                if axis == 0 or axis == len(cur.shape) - 1:
                    cur = self.g.node("slice", self.hint(), {"x": cur}, {"out": (tuple(cur.shape[:axis]) + (stop - start,) + tuple(cur.shape[axis + 1:]), cur.dtype)},
                                      {"axis": 0 if axis == 0 else -1, "start": start, "length": stop - start})["out"]
                    final_shape.append(stop - start)
                    axis += 1
                    continue
                self.fail(f"slicing axis {axis} of {_dims_str(cur.shape)} (only the first and the last axis)")
            elif isinstance(item, int):
                if d == 1:
                    cur = self.reshape(cur, cur.shape[:axis] + cur.shape[axis + 1:])
                    continue
                if axis == 0 and not isinstance(d, str):
                    cur = self.g.node("select", self.hint(), {"x": cur}, {"out": (cur.shape[1:], cur.dtype)}, {"index": item})["out"]
                    continue
                self.fail(f"indexing axis {axis} ({d}) of {_dims_str(cur.shape)} (an index picks from the first axis, or drops a size-1 axis)")
            else:
                self.fail(f"index {item!r}")
        final_shape.extend(cur.shape[axis:])
        return self.reshape(cur, final_shape)

    def op_narrow(self, x, dim, start, length):
        x = self.tensor(x)
        idx = [slice(None)] * len(x.shape)
        idx[dim] = slice(start, start + length)
        return self.index(x, tuple(idx))

    def op_select(self, x, dim, index):
        x = self.tensor(x)
        idx = [slice(None)] * len(x.shape)
        idx[dim] = index
        return self.index(x, tuple(idx))

    def op_chunk(self, *a, **k):
        self.fail("chunk / split: slice the tensor instead")

    # -- sizes --
    def op_size(self, x, dim=None):
        shape = x.shape if hasattr(x, "shape") else self.fail("size of a non-tensor")
        if isinstance(x, Heads):
            self.fail("size of attention heads")
        return Shape(shape) if dim is None else shape[dim]

    def op_dim(self, x):
        return len(x.shape)

    def op_getattr(self, x, name):
        if name == "shape":
            return Shape(x.shape)
        if name in ("device", "dtype"):
            return None
        self.fail(f"attribute '{name}'")

    def op_floordiv(self, a, b):
        if isinstance(a, str) or isinstance(b, str):
            self.fail("arithmetic on the batch or sequence size")
        return a // b

    def op_sqrt(self, a):
        return math.sqrt(a)

    # -- making tensors --
    def op_arange(self, end, *args, **kwargs):
        if args and not isinstance(args[0], (torch.dtype, type(None))):
            self.fail("arange(start, end): only arange(S)")
        if end != S:
            self.fail(f"arange({end}): only the sequence length S makes a length mask")
        return Arange((S,))

    def zeros(self, shape):
        shape = list(shape[0]) if len(shape) == 1 and isinstance(shape[0], (list, tuple, Shape)) else list(shape)
        if shape and isinstance(shape[0], Shape):
            shape = list(shape[0].dims)
        return Zeros(tuple(shape))

    def op_zeros(self, *shape, **kwargs):
        return self.zeros(shape)

    def op_new_zeros(self, x, *shape, **kwargs):
        return self.zeros(shape)

    def op_zeros_like(self, x, **kwargs):
        return Zeros(x.shape)

    def op_expand(self, x, *sizes):
        if isinstance(x, (Arange, Mask)):
            return x  # broadcasting it changes nothing the comparison needs
        self.fail("expand: vkrnn broadcasts only inside the attention patterns")

    # -- comparisons: length masks --
    def mask(self, a, b, op):
        if isinstance(a, Arange) and isinstance(b, LengthsView) and op in ("lt", "ge"):
            return self.make_mask(a, b, op == "lt")
        if isinstance(a, LengthsView) and isinstance(b, Arange) and op in ("gt", "le"):
            return self.make_mask(b, a, op == "gt")
        self.fail(f"comparison '{op}' is supported only as arange(S) < lengths[:, None]")

    def make_mask(self, ar, lv, valid):
        if len(ar.shape) != len(lv.shape):
            self.fail("length mask operands of different ranks")
        shape = []
        for p, q in zip(ar.shape, lv.shape):
            if p == 1 and q == 1:
                shape.append(1)
            elif p == S and q == 1:
                shape.append(S)
            elif p == 1 and q == B:
                shape.append(B)
            else:
                self.fail(f"length mask of shapes {_dims_str(ar.shape)} and {_dims_str(lv.shape)}")
        if shape.count(B) != 1 or shape.count(S) != 1 or shape.index(B) > shape.index(S):
            self.fail("a length mask must be [B, ..., S]")
        return Mask(lv.lengths, shape, valid)

    def op_lt(self, a, b):
        return self.mask(a, b, "lt")

    def op_gt(self, a, b):
        return self.mask(a, b, "gt")

    def op_le(self, a, b):
        return self.mask(a, b, "le")

    def op_ge(self, a, b):
        return self.mask(a, b, "ge")

    def op_invert(self, m):
        if not isinstance(m, Mask):
            self.fail("~ of something other than a length mask")
        return Mask(m.lengths, m.shape, not m.valid)

    op_logical_not = op_invert

    def op_eq(self, m, v):
        if isinstance(m, Mask) and v in (0, False):
            return Mask(m.lengths, m.shape, not m.valid)
        if isinstance(m, Mask) and v in (1, True):
            return m
        self.fail("== is supported only as mask == 0")

    # -- elementwise --
    def activation(self, x, fn):
        if fn == "tanh" and isinstance(x, AddKQ) and not isinstance(x, TanhKQ):
            return TanhKQ(x.keys, x.query, x.bias)
        x = self.tensor(x)
        return self.g.node("activation", self.hint(), {"x": x}, {"out": (x.shape, "f32")}, {"fn": fn})["out"]

    def op_tanh(self, x):
        return self.activation(x, "tanh")

    def op_sigmoid(self, x):
        return self.activation(x, "sigmoid")

    def op_relu(self, x, inplace=False):
        return self.activation(x, "relu")

    def op_dropout(self, x, *a, **k):
        return x

    op_dropout2d = op_dropout

    def op_softmax(self, x, dim=None, **kwargs):
        if dim is None:
            self.fail("softmax without dim")
        rank = (4 if x.split else 3) if isinstance(x, QK) else len(x.shape)
        if dim % rank != rank - 1:
            self.fail(f"softmax over dim {dim}: only the last dimension")
        if isinstance(x, QK):
            return SelfWeights(x)
        if isinstance(x, MaskedScores):
            return self.softmax(x.scores, x.lengths)
        return self.softmax(self.tensor(x), None)

    def softmax(self, scores, lengths):
        shape = scores.shape
        # [B, S] or [B, 1, S]: over the source axis; else a plain softmax over the last axis.
        if len(shape) >= 2 and shape[0] == B and shape[-1] == S and all(d == 1 for d in shape[1:-1]):
            flat = self.reshape(scores, (B, S))
            out = self.g.node("masked_softmax", self.hint(), {"scores": flat, "lengths": lengths}, {"weights": ((B, S), "f32")})["weights"]
            return self.reshape(out, shape)
        if lengths is not None:
            self.fail(f"a length-masked softmax over {_dims_str(shape)}")
        return self.g.node("activation", self.hint(), {"x": scores}, {"out": (shape, "f32")}, {"fn": "softmax"})["out"]

    def op_log_softmax(self, x, *a, **k):
        self.fail("log_softmax: return the logits themselves (vkrnn's decoding takes the log-softmax of the logits; "
                  "its scores are log-probabilities)")

    def op_masked_fill(self, x, mask, value):
        if not isinstance(mask, Mask):
            self.fail("masked_fill with a mask that is not a length mask (arange(S) < lengths[:, None])")
        if mask.valid:
            self.fail("masked_fill over the valid positions (fill where position >= length: ~mask or mask == 0)")
        if not (isinstance(value, (int, float)) and value <= MASK_FILL_LIMIT):
            self.fail(f"masked_fill value {value!r}: only -inf (or a number <= {MASK_FILL_LIMIT:g}) before a softmax")
        if isinstance(x, QK):
            if mask.shape[-1] != S or any(d == S for d in mask.shape[:-1]):
                self.fail("self-attention scores may only be masked by key position")
            return x.with_(lengths=mask.lengths)
        x = self.tensor(x)
        if x.shape[-1] != S or x.shape[0] != B:
            self.fail(f"masked_fill of {_dims_str(x.shape)}: scores [B, ..., S] expected")
        return MaskedScores(x, mask.lengths)

    def op_where(self, cond, a, b):
        if isinstance(cond, Mask) and isinstance(b, (int, float)):
            return self.op_masked_fill(a, Mask(cond.lengths, cond.shape, not cond.valid), b)
        self.fail("torch.where other than where(mask, scores, -inf)")

    def op_add(self, a, b, alpha=1):
        if alpha != 1:
            self.fail("add with alpha")
        for x, y in ((a, b), (b, a)):
            if isinstance(x, AddKQ) and isinstance(y, Param) and y.shape == (x.shape[-1],) and x.bias is None:
                return AddKQ(x.keys, x.query, y)
            if isinstance(x, T) and isinstance(y, PositionTable):
                return self.positional_encoding(x, y)
            if isinstance(x, T) and isinstance(y, Param) and len(y.shape) == 1 and y.shape[0] == x.shape[-1]:
                return self.add_bias(x, y)
        a, b = self.tensor(a), self.tensor(b)
        if a.shape == b.shape:
            return self.g.node("add", self.hint(), {"a": a, "b": b}, {"out": (a.shape, "f32")})["out"]
        for k, q in ((a, b), (b, a)):
            if len(k.shape) == 3 and k.shape[0] == B and k.shape[1] == S and q.shape == (B, 1, k.shape[2]):
                return AddKQ(k, q)
        self.fail(f"adding {_dims_str(a.shape)} and {_dims_str(b.shape)} (broadcasting only in additive attention: "
                  "keys [B, S, A] + query [B, 1, A])")

    def add_bias(self, x, p):
        node = x.producer
        if node and node["op"] == "linear" and "bias" not in node.get("weights", {}) and self.single_use(x):
            node["weights"]["bias"] = self.weights.add(p.name, p.tensor)
            return x
        self.fail("adding a bias vector to something other than a bias-free linear layer")

    def single_use(self, x):
        return True  # read once in the traced code: fx gives each use its own node

    def op_sub(self, a, b):
        self.fail("subtraction")

    def op_neg(self, a):
        self.fail("negation")

    def op_mul(self, a, b):
        for x, y in ((a, b), (b, a)):
            if isinstance(x, QK) and isinstance(y, (int, float)):
                return x.with_(scale=x.scale * y)
            if isinstance(x, T) and isinstance(y, Mask) and y.valid:
                return self.sequence_mask(x, y)
            if isinstance(x, SelfWeights) and isinstance(y, Mask) and y.valid and y.shape[-1] == 1:
                return x  # query rows past the length: vkrnn's self-attention writes them as zeros
        if isinstance(a, T) and isinstance(b, T):
            for w, v in ((a, b), (b, a)):
                if len(w.shape) == 3 and w.shape[1] == S and w.shape[2] == 1 and len(v.shape) == 3 and v.shape[1] == S:
                    return Weighted(w, v)
                if len(w.shape) == 3 and w.shape[1] == 1 and len(v.shape) == 3 and v.shape[1] == S and w.shape[2] == v.shape[2]:
                    return DotTerms(v, w)
        self.fail(f"multiplying {type(a).__name__} by {type(b).__name__} (elementwise products appear only in the attention patterns)")

    def op_truediv(self, a, b):
        if isinstance(a, QK) and isinstance(b, (int, float)):
            return a.with_(scale=a.scale / b)
        if isinstance(a, T) and isinstance(b, (int, float)) and a.producer and a.producer["op"] == "attention_scores":
            return self.scale_scores(a, 1.0 / b)
        self.fail("division (only of attention scores by a number)")

    def sequence_mask(self, x, m):
        if len(x.shape) < 2 or x.shape[:2] != (B, S) or m.shape[:2] != (B, S) or any(d != 1 for d in m.shape[2:]):
            self.fail(f"multiplying {_dims_str(x.shape)} by a length mask {_dims_str(m.shape)}: a mask [B, S, 1...] over [B, S, ...]")
        return self.g.node("sequence_mask", self.hint(), {"x": x, "lengths": m.lengths}, {"out": (x.shape, "f32")})["out"]

    def op_sum(self, x, dim=None, keepdim=False):
        if isinstance(x, Weighted) and dim is not None and dim % 3 == 1:
            ctx = self.context(self.reshape(x.weights, (B, S)), x.values)
            return self.reshape(ctx, (B, 1, x.values.shape[2])) if keepdim else ctx
        if isinstance(x, DotTerms) and dim is not None and dim % 3 == 2:
            q = self.reshape(x.query, (B, x.query.shape[2]))
            sc = self.scores(x.keys, q, "dot")
            return self.reshape(sc, (B, S, 1)) if keepdim else sc
        self.fail("sum (only weights * values summed over the source, or keys * query summed over the features)")

    # -- linear algebra --
    def op_cat(self, tensors, dim=0):
        ts = [self.tensor(t) for t in tensors]
        rank = len(ts[0].shape)
        if len(ts) == 1:
            return ts[0]
        if dim % rank == rank - 1:
            width = sum(t.shape[-1] for t in ts)
            return self.g.node("concat", self.hint(), {"x": ts}, {"out": (ts[0].shape[:-1] + (width,), "f32")})["out"]
        if dim % rank == 0 and rank >= 2 and all(not isinstance(t.shape[0], str) for t in ts):
            rows = sum(t.shape[0] for t in ts)
            return self.g.node("concat", self.hint(), {"x": ts}, {"out": ((rows,) + ts[0].shape[1:], "f32")},
                               {"axis": 0})["out"]
        self.fail(f"cat along dim {dim} of rank-{rank} tensors (the last dimension, or the first when it is not the batch)")

    def op_stack(self, tensors, dim=0):
        if dim != 0:
            self.fail(f"stack along dim {dim} (only dim 0, e.g. layers of an RNN state)")
        ts = [self.tensor(t) for t in tensors]
        return self.op_cat([self.reshape(t, (1,) + t.shape) for t in ts], 0)

    op_concat = op_cat

    def linear(self, x, weight_name, weight, bias_name=None, bias=None):
        x = self.tensor(x)
        w = {"weight": self.weights.add(weight_name, weight)}
        if bias is not None:
            w["bias"] = self.weights.add(bias_name, bias)
        if weight.shape[1] != x.shape[-1]:
            self.fail(f"linear layer {tuple(weight.shape)} on input {_dims_str(x.shape)}")
        return self.g.node("linear", self.hint(), {"x": x}, {"y": (x.shape[:-1] + (weight.shape[0],), "f32")}, weights=w)["y"]

    def op_f_linear(self, x, weight, bias=None):
        if not isinstance(weight, Param):
            self.fail("F.linear with a weight that is not a parameter")
        return self.linear(x, weight.name, weight.tensor, bias.name if bias is not None else None, bias.tensor if bias is not None else None)

    def op_matmul(self, a, b):
        if isinstance(a, TanhKQ) and isinstance(b, Param):
            v = b.tensor.reshape(-1)
            sc = self.additive(a, b.name, v, None, None)
            return sc if len(b.shape) == 1 else self.reshape(sc, (B, S, 1))
        if isinstance(b, Param):
            x = self.tensor(a)
            if len(b.shape) == 1:
                y = self.linear(x, b.name + ":row", b.tensor[None, :])
                return self.reshape(y, x.shape[:-1])
            return self.linear(x, b.name + ":T", b.tensor.t())
        if isinstance(a, QK) or isinstance(b, QK):
            self.fail("matmul of unnormalised self-attention scores")
        if isinstance(a, SelfWeights):
            return self.self_attention(a, b)
        if isinstance(a, Heads) and isinstance(b, Transposed) and isinstance(b.x, Heads):
            if not (a.transposed and b.x.transposed and a.heads == b.x.heads):
                self.fail("multi-head scores of differently split heads")
            qk = QK(a.x, b.x.x, 1.0, None, a.heads)
            qk.split = True
            return qk
        if isinstance(b, Transposed):
            q = self.tensor(a)
            k = self.tensor(b.x)
            if q.shape == k.shape and len(q.shape) == 3 and q.shape[1] == S:
                return QK(q, k)
            if len(q.shape) == 3 and q.shape[1] == 1 and k.shape[1] == S:
                sc = self.scores(k, self.reshape(q, (B, q.shape[2])), "dot")
                return self.reshape(sc, (B, 1, S))
            self.fail(f"matmul of {_dims_str(q.shape)} and transposed {_dims_str(k.shape)}")
        a, b = self.tensor(a), self.tensor(b)
        if len(a.shape) == 3 and len(b.shape) == 3:
            if a.shape[1] == S and b.shape[1:] == (a.shape[2], 1):  # keys [B, S, K] @ q [B, K, 1]
                sc = self.scores(a, self.reshape(b, (B, a.shape[2])), "dot")
                return self.reshape(sc, (B, S, 1))
            if a.shape[1] == 1 and a.shape[2] == S and b.shape[1] == S:  # weights [B, 1, S] @ values [B, S, H]
                ctx = self.context(self.reshape(a, (B, S)), b)
                return self.reshape(ctx, (B, 1, b.shape[2]))
        self.fail(f"matmul of {_dims_str(a.shape)} and {_dims_str(b.shape)} (mapped: keys @ query[..., None], "
                  "weights[:, None] @ values, x @ parameter, and the self-attention pattern)")

    op_bmm = op_matmul

    def op_einsum(self, *a, **k):
        self.fail("einsum: write the product with bmm / matmul")

    def scores(self, keys, query, score, weights=None):
        out = self.g.node("attention_scores", self.hint(), {"keys": keys, "query": query},
                          {"scores": ((B, S), "f32")}, {"score": score}, weights)["scores"]
        return out

    def scale_scores(self, sc, factor):
        node = sc.producer
        kd = self.g.shape(node["inputs"]["keys"])[-1]
        if node["options"]["score"] == "dot" and abs(factor * math.sqrt(kd) - 1) < 1e-12:
            node["options"]["score"] = "scaled_dot"
            return sc
        self.fail(f"scaling dot scores by {factor}: only 1/sqrt({kd}) (scaled dot) is mapped")

    def context(self, weights, values):
        return self.g.node("attention_context", self.hint(), {"weights": weights, "values": values},
                           {"context": ((B, values.shape[2]), "f32")})["context"]

    def additive(self, tk, v_name, v, vb_name, vb):
        keys, qside = tk.keys, tk.query
        A = keys.shape[2]
        w = {"v": self.weights.add(v_name, v)}
        if vb is not None:
            w["v_bias"] = self.weights.add(vb_name, vb.reshape(1))
        node = qside.producer if qside.view_of is None else qside.view_of.producer
        src = qside.view_of or qside
        if node and node["op"] == "linear" and src.shape[-1] == A:
            # The query's projection moves into the score: W q + b.
            x_name = node["inputs"]["x"]
            x = self.find_tensor(x_name)
            q = self.reshape(x, (B, x.shape[-1]))
            w["w"] = node["weights"]["weight"]
            if "bias" in node["weights"]:
                w["bias"] = node["weights"]["bias"]
        else:
            q = self.reshape(qside, (B, A))
            w["w"] = self.weights.add(f"{self.g.name}.{self.hint()}.identity{A}", torch.eye(A, dtype=torch.float64))
        if tk.bias is not None:
            if "bias" in w:
                b = self.weights.tensors[w["bias"]] + tk.bias.tensor.to(torch.float64)
                w["bias"] = self.weights.add(f"{tk.bias.name}+{w['bias']}", b)
            else:
                w["bias"] = self.weights.add(tk.bias.name, tk.bias.tensor)
        return self.scores(keys, q, "additive", w)

    def find_tensor(self, name):
        return self.g.tensors[name]

    def positional_encoding(self, x, table):
        if len(x.shape) != 3 or x.shape[:2] != (B, S) or table.shape[-1] != x.shape[2]:
            self.fail(f"adding a position table {_dims_str(table.shape)} to {_dims_str(x.shape)}")
        opts = {"max_positions": table.max_positions}
        return self.g.node("positional_encoding", self.hint(), {"x": x}, {"out": (x.shape, "f32")}, opts)["out"]

    def position_table(self, p, idx):
        """pe[:S] / pe[:S][None] of a sinusoidal table (checked against the formula)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if not isinstance(idx[0], slice) or idx[0].start not in (None, 0) or idx[0].stop != S:
            self.fail("indexing a parameter (only pe[:S] of a positional-encoding table)")
        table = p.tensor
        if table.dim() == 3 and table.shape[0] == 1:
            table = table[0]
        if table.dim() != 2:
            self.fail("a position table that is not [positions, dim]")
        n, d = table.shape
        pos = np.arange(n, dtype=np.float64)[:, None]
        i2 = np.arange(0, d, 2, dtype=np.float64)[None, :]
        angle = pos / np.power(10000.0, i2 / d)
        ref = np.zeros((n, d))
        ref[:, 0::2] = np.sin(angle)
        ref[:, 1::2] = np.cos(angle[:, : d // 2])
        if np.max(np.abs(table.double().numpy() - ref)) > 1e-5:
            self.fail(f"'{p.name}' is not the sinusoidal encoding sin/cos(pos / 10000^(2i/d)) (a learned position table is not supported)")
        out = PositionTable((S, d) if len(idx) == 1 else (1, S, d))
        out.max_positions = n
        return out

    # -- self-attention --
    def self_attention(self, w, v):
        qk = w.qk
        if qk.split:
            if not (isinstance(v, Heads) and v.transposed and v.heads == qk.heads):
                self.fail("multi-head weights times values that are not split into the same heads")
            v = v.x
        v = self.tensor(v)
        if v.shape != qk.q.shape:
            self.fail(f"self-attention values {_dims_str(v.shape)} unlike the queries {_dims_str(qk.q.shape)}")
        E = qk.q.shape[2]
        d = E // qk.heads
        q = qk.q
        want = 1.0 / math.sqrt(d)
        if abs(qk.scale - want) > 1e-12 * want:
            q = self.rescale_queries(q, qk.scale / want)
        outs = {"out": (v.shape, "f32")}
        if w.node is None:
            outs["weights"] = ((B, qk.heads, S, S), "f32")
        res = self.g.node("self_attention", self.hint(), {"q": q, "k": qk.k, "v": v, "lengths": qk.lengths}, outs,
                          {"heads": qk.heads})
        if w.node is None:
            w.node = res["weights"] if qk.split else self.reshape(res["weights"], (B, S, S))
        if qk.split:
            return HeadsOut(res["out"], qk.heads)
        return res["out"]

    def rescale_queries(self, q, factor):
        node = q.producer
        if node and node["op"] == "linear":
            wn = node["weights"]["weight"]
            node["weights"]["weight"] = self.weights.add(f"{wn}*{factor:.17g}", self.weights.tensors[wn] * factor)
            if "bias" in node["weights"]:
                bn = node["weights"]["bias"]
                node["weights"]["bias"] = self.weights.add(f"{bn}*{factor:.17g}", self.weights.tensors[bn] * factor)
            return q
        self.fail(f"self-attention scaled by {factor:g} x 1/sqrt(head dim): vkrnn scales by 1/sqrt(head dim); "
                  "the queries would need a linear layer to fold the difference into")

    def self_weights_tensor(self, w):
        if w.node is None:
            self.fail("self-attention weights used before they meet their values (weights @ v)")
        return w.node

    def merge_heads(self, x, sizes):
        if isinstance(x, HeadsOut) and not x.transposed:
            shape = self.resolve_shape(x.out, sizes)
            if shape == x.out.shape:
                return x.out
        self.fail("merging attention heads other than out.transpose(1, 2).reshape(B, S, E)")

    # -- modules --
    def call_module(self, mod, name, args, kwargs):
        if isinstance(mod, (nn.Dropout, nn.Identity)):
            return args[0]
        if isinstance(mod, nn.Embedding):
            if mod.max_norm is not None:
                self.fail("nn.Embedding with max_norm")
            ids = self.tensor(args[0])
            if ids.dtype != "i32":
                self.fail("an embedding of something other than token ids")
            base = ids.view_of
            w = {"weight": self.weights.add(f"{name}.weight", mod.weight)}
            if base is not None and base.producer is None:
                # Ids reshaped from an input: look up the input and reshape the rows instead (so the
                # decode loop sees the embedding read the token directly).
                out = self.g.node("embedding", self.hint(), {"ids": base}, {"out": (base.shape + (mod.embedding_dim,), "f32")}, weights=w)["out"]
                return self.reshape(out, ids.shape + (mod.embedding_dim,))
            return self.g.node("embedding", self.hint(), {"ids": ids}, {"out": (ids.shape + (mod.embedding_dim,), "f32")}, weights=w)["out"]
        if isinstance(mod, nn.Linear):
            x = args[0]
            if isinstance(x, TanhKQ):
                if mod.out_features != 1:
                    self.fail("the additive-attention v layer must have one output")
                sc = self.additive(x, f"{name}.weight", mod.weight.reshape(-1), f"{name}.bias" if mod.bias is not None else None, mod.bias)
                return self.reshape(sc, (B, S, 1))
            return self.linear(x, f"{name}.weight", mod.weight, f"{name}.bias" if mod.bias is not None else None, mod.bias)
        if isinstance(mod, (nn.Tanh, nn.Sigmoid, nn.ReLU)):
            return self.activation(args[0], type(mod).__name__.lower())
        if isinstance(mod, nn.Softmax):
            return self.op_softmax(args[0], dim=mod.dim)
        if isinstance(mod, nn.RNNBase):
            return self.rnn(mod, name, *args, **kwargs)
        if isinstance(mod, nn.RNNCellBase):
            return self.rnn_cell(mod, name, *args, **kwargs)
        self.fail(f"module type {type(mod).__module__}.{type(mod).__name__} has no vkrnn mapping")

    def rnn_options(self, mod):
        cell = {"GRU": "gru", "LSTM": "lstm", "RNN": "rnn_tanh" if getattr(mod, "nonlinearity", "tanh") == "tanh" else "rnn_relu"}
        kind = type(mod).__name__
        if kind not in cell:
            self.fail(f"recurrent module {kind}")
        opts = {"cell": cell[kind], "hidden_size": mod.hidden_size, "num_layers": mod.num_layers,
                "bidirectional": mod.bidirectional, "bias": mod.bias}
        if getattr(mod, "proj_size", 0):
            opts["proj_size"] = mod.proj_size
        return opts

    def rnn(self, mod, name, x, hx=None):
        opts = self.rnn_options(mod)
        lstm = opts["cell"] == "lstm"
        L, D, H = mod.num_layers, 2 if mod.bidirectional else 1, mod.hidden_size
        HO = getattr(mod, "proj_size", 0) or H
        weights = {p: self.weights.add(f"{name}.{p}", t) for p, t in mod.named_parameters()}
        h0 = c0 = None
        if hx is not None:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    self.fail("an LSTM's state is (h, c)")
                h0, c0 = hx
            else:
                h0 = hx
            h0 = None if isinstance(h0, Zeros) else self.tensor(h0, "h0")
            c0 = None if isinstance(c0, Zeros) or c0 is None else self.tensor(c0, "c0")
        lengths = None
        if isinstance(x, Packed):
            if not mod.batch_first:
                self.fail("a packed sequence into an RNN without batch_first=True")
            lengths, x = x.lengths, x.x
        x = self.tensor(x)
        step = False
        if not mod.batch_first:
            if len(x.shape) == 3 and x.shape[0] == 1:
                step = True  # one step of a sequence-first RNN: [1, B, I]
            else:
                self.fail("batch_first=False: vkrnn runs batch-first sequences (nn.GRU(..., batch_first=True))")
        elif len(x.shape) == 3 and x.shape[1] == 1 and self.step_mode and not mod.bidirectional and lengths is None:
            step = True  # a decoder step: [B, 1, I]
        if step:
            xin = self.reshape(x, (B, x.shape[2]))
            ins = {"x": xin, "h0": h0, "c0": c0}
            outs = {"output": ((B, HO), "f32"), "h_n": ((L * D, B, HO), "f32")}
            if lstm:
                outs["c_n"] = ((L * D, B, H), "f32")
            res = self.g.node("rnn", self.hint(), ins, outs, opts, weights)
            self.g.step_rnns.add(res["h_n"].producer["name"])
            out = self.reshape(res["output"], (1, B, HO) if not mod.batch_first else (B, 1, HO))
        else:
            if len(x.shape) != 3 or x.shape[0] != B:
                self.fail(f"RNN input {_dims_str(x.shape)}: expected [B, T, I]")
            ins = {"x": x, "h0": h0, "c0": c0, "lengths": lengths}
            outs = {"output": ((B, x.shape[1], D * HO), "f32"), "h_n": ((L * D, B, HO), "f32")}
            if lstm:
                outs["c_n"] = ((L * D, B, H), "f32")
            res = self.g.node("rnn", self.hint(), ins, outs, opts, weights)
            out = PackedOut(res["output"]) if lengths is not None else res["output"]
        state = (res["h_n"], res["c_n"]) if lstm else res["h_n"]
        return (out, state)

    def rnn_cell(self, mod, name, x, hx=None):
        kind = type(mod).__name__
        cell = {"GRUCell": "gru", "LSTMCell": "lstm", "RNNCell": "rnn_tanh" if getattr(mod, "nonlinearity", "tanh") == "tanh" else "rnn_relu"}[kind]
        H = mod.hidden_size
        opts = {"cell": cell, "hidden_size": H, "num_layers": 1, "bidirectional": False, "bias": mod.bias}
        weights = {f"{p}_l0": self.weights.add(f"{name}.{p}", t) for p, t in mod.named_parameters()}
        x = self.tensor(x)
        h0 = c0 = None
        if hx is not None:
            if cell == "lstm":
                h0, c0 = hx
            else:
                h0 = hx
            h0 = None if isinstance(h0, Zeros) else self.reshape(self.tensor(h0), (1, B, H))
            c0 = None if c0 is None or isinstance(c0, Zeros) else self.reshape(self.tensor(c0), (1, B, H))
        outs = {"output": ((B, H), "f32"), "h_n": ((1, B, H), "f32")}
        if cell == "lstm":
            outs["c_n"] = ((1, B, H), "f32")
        res = self.g.node("rnn", self.hint(), {"x": x, "h0": h0, "c0": c0}, outs, opts, weights)
        self.g.step_rnns.add(res["h_n"].producer["name"])
        h = self.reshape(res["h_n"], (B, H))
        if cell == "lstm":
            return (h, self.reshape(res["c_n"], (B, H)))
        return h

    # -- packed sequences --
    def op_pack_padded_sequence(self, x, lengths, batch_first=False, enforce_sorted=True):
        if not batch_first:
            self.fail("pack_padded_sequence without batch_first=True")
        if not (isinstance(lengths, T) and lengths.dtype == "i32" and lengths.shape == (B,)):
            self.fail("pack_padded_sequence with lengths that are not the model's lengths input")
        return Packed(self.tensor(x), lengths)

    def op_pad_packed_sequence(self, seq, batch_first=False, padding_value=0.0, total_length=None):
        if not isinstance(seq, PackedOut):
            self.fail("pad_packed_sequence of something other than an RNN's packed output")
        if not batch_first:
            self.fail("pad_packed_sequence without batch_first=True")
        if padding_value != 0.0:
            self.fail("pad_packed_sequence with a padding value other than 0")
        return (seq.out, None)


def make_mapper(root, g, weights, step_mode):
    return Mapper(root, g, weights, step_mode)


# --- clean-up passes --------------------------------------------------------------------------

def simplify(g, keep):
    """Dead nodes out, then the attention chains fused; returns the tensors still read."""
    prune(g, keep)
    fuse_attention(g)
    return prune(g, keep)


def fuse_attention(g):
    """attention_scores -> masked_softmax -> attention_context over one score and one context
    becomes one attention node (FusedAttention: one pass over keys and values)."""
    producers = {out: n for n in g.nodes for out in n["outputs"].values()}
    readers = {}
    for n in g.nodes:
        for v in n["inputs"].values():
            for name in (v if isinstance(v, list) else [v]):
                readers.setdefault(name, []).append(n)
    outputs = set(g.outputs.values())
    for ctx in [n for n in g.nodes if n["op"] == "attention_context"]:
        sm = producers.get(ctx["inputs"]["weights"])
        if not sm or sm["op"] != "masked_softmax":
            continue
        sc = producers.get(sm["inputs"]["scores"])
        if not sc or sc["op"] != "attention_scores":
            continue
        scores = sc["outputs"]["scores"]
        if len(readers.get(scores, [])) != 1 or scores in outputs:
            continue
        if len([r for r in readers.get(sm["outputs"]["weights"], []) if r["op"] == "attention_context"]) != 1:
            continue
        lengths = sm["inputs"].get("lengths") or sc["inputs"].get("lengths")
        fused = {"name": ctx["name"], "op": "attention",
                 "inputs": {"keys": sc["inputs"]["keys"], "values": ctx["inputs"]["values"], "query": sc["inputs"]["query"]},
                 "outputs": {"context": ctx["outputs"]["context"], "weights": sm["outputs"]["weights"]},
                 "options": dict(sc["options"])}
        if lengths:
            fused["inputs"]["lengths"] = lengths
        if sc.get("weights"):
            fused["weights"] = dict(sc["weights"])
        i = g.nodes.index(ctx)
        g.nodes[i] = fused
        g.nodes.remove(sm)
        g.nodes.remove(sc)
        producers = {out: n for n in g.nodes for out in n["outputs"].values()}


def prune(g, keep):
    """Drops nodes whose outputs nothing reads (and outputs of kept nodes nobody names)."""
    live = set(keep)
    changed = True
    nodes = g.nodes
    while changed:
        changed = False
        for n in nodes:
            if any(o in live for o in n["outputs"].values()):
                for v in n["inputs"].values():
                    for name in (v if isinstance(v, list) else [v]):
                        if name not in live:
                            live.add(name)
                            changed = True
    g.nodes = [n for n in nodes if any(o in live for o in n["outputs"].values())]
    optional = {"attention": {"weights"}, "rnn": {"h_n", "c_n", "output"}, "self_attention": {"weights"},
                "attention_pooling": {"weights"}}
    for n in g.nodes:
        for slot in list(n["outputs"]):
            if slot in optional.get(n["op"], ()) and n["outputs"][slot] not in live:
                if n["op"] == "rnn" and slot == "h_n" and n["outputs"].get("output") in live and n["name"] in g.step_rnns:
                    continue  # step mode: the output is a view of h_n
                del n["outputs"][slot]
    used = set()
    for n in g.nodes:
        for v in n["inputs"].values():
            used.update(v if isinstance(v, list) else [v])
    return used


# --- whole models -----------------------------------------------------------------------------

def _flatten(value, path, leaves):
    """Leaves of nested tuples / lists / dicts, with their paths; returns a spec to rebuild."""
    if isinstance(value, (tuple, list)):
        return (type(value), [_flatten(v, f"{path}.{i}", leaves) for i, v in enumerate(value)])
    if isinstance(value, dict):
        return (dict, [(k, _flatten(v, f"{path}.{k}", leaves)) for k, v in value.items()])
    leaves.append((path, value))
    return None


def _unflatten(spec, leaves):
    it = iter(leaves)

    def build(sp):
        if sp is None:
            return next(it)
        kind, items = sp
        if kind is dict:
            return {k: build(v) for k, v in items}
        return kind(build(v) for v in items)
    return build(spec)


def _name(path):
    return re.sub(r"[^A-Za-z0-9_]", "_", path.strip(".")) or "x"


def _check_weights_named(weights):
    for name, t in weights.tensors.items():
        if not torch.isfinite(t).all():
            raise ExportError(f"weight '{name}' holds non-finite values")


def trace_classifier(model, forward):
    weights = Weights()
    fxg, root = trace(model, forward, ["tokens", "lengths"])
    g = GraphBuilder("forward")
    tokens = g.input("tokens", {"from": "tokens"}, (B, S), "i32", kind="tokens")
    lengths = g.input("lengths", {"from": "lengths"}, (B,), "i32", kind="lengths")
    m = make_mapper(root, g, weights, step_mode=False)
    out = m.run(fxg, {"tokens": tokens, "lengths": lengths})
    roles = {}
    if isinstance(out, dict):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [("logits" if i == 0 else f"output_{i}", v) for i, v in enumerate(out)]
    else:
        items = [("logits", out)]
    m.node = list(fxg.nodes)[-1]
    activation = None
    for role, v in items:
        if v is None:
            continue
        t = m.tensor(v, f"output '{role}'")
        roles[role] = t
    logits = roles.get("logits")
    if logits is None:
        raise ExportError("the classifier's forward returns no logits (the first output, or the 'logits' entry)")
    p = logits.producer
    if "probs" not in roles and p and p["op"] == "activation" and p["options"]["fn"] in ("sigmoid", "softmax"):
        # The module ends in its output activation: its input is the logits.
        activation = p["options"]["fn"]
        roles["probs"] = logits
        logits = roles["logits"] = g.tensors[p["inputs"]["x"]]
    if len(logits.shape) != 2 or logits.shape[0] != B:
        raise ExportError(f"the classifier's logits are {_dims_str(logits.shape)}, expected [B, classes]")
    for role, t in roles.items():
        if role in ("pooling",) and t.shape != (B, S):
            roles[role] = m.reshape(t, (B, S))
        g.outputs[role] = roles[role].name
    simplify(g, list(g.outputs.values()))
    _check_weights_named(weights)
    return {"forward": g.json()}, weights, activation


def trace_seq2seq(model, encode, step):
    weights = Weights()
    # The encoder.
    fxg, root = trace(model, encode, ["tokens", "lengths"])
    e = GraphBuilder("encoder")
    tokens = e.input("tokens", {"from": "tokens"}, (B, S), "i32", kind="tokens")
    lengths = e.input("lengths", {"from": "lengths"}, (B,), "i32", kind="lengths")
    me = make_mapper(root, e, weights, step_mode=False)
    out = me.run(fxg, {"tokens": tokens, "lengths": lengths})
    me.node = list(fxg.nodes)[-1]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ExportError("encode(tokens, lengths) must return (memory, state)")
    memory, state = out
    mem_leaves, st_leaves = [], []
    mem_spec = _flatten(memory, "memory", mem_leaves)
    st_spec = _flatten(state, "state", st_leaves)

    # The decoder step, over flat inputs.
    d = GraphBuilder("decoder_step")
    token = d.input("token", {"from": "token"}, (B,), "i32", kind="token")
    dec_lengths = None
    placeholders = {"token": token}
    names = ["token"]
    state_inputs = []
    encoder_reads = {}

    def from_encoder(path, v):
        nonlocal dec_lengths
        if isinstance(v, T) and v.kind == "lengths":
            if dec_lengths is None:
                dec_lengths = d.input("lengths", {"from": "lengths"}, (B,), "i32", kind="lengths")
            return dec_lengths
        if isinstance(v, T):
            if v.kind is not None:
                raise ExportError(f"encode returns its input tokens as {path}: the decoder cannot read them")
            t = d.input(_name(path), {"from": f"encoder:{v.name}"}, v.shape, v.dtype)
            encoder_reads[v.name] = path
            return t
        if isinstance(v, Mask):
            if dec_lengths is None:
                dec_lengths = d.input("lengths", {"from": "lengths"}, (B,), "i32", kind="lengths")
            return Mask(dec_lengths, v.shape, v.valid)
        if isinstance(v, Zeros):
            if any(x == S for x in v.shape) or B not in v.shape:
                raise ExportError(f"{path}: a zeros tensor {_dims_str(v.shape)} (only [.., B, ..] without S is supported)")
            return d.input(_name(path), {"from": "zeros", "shape": list(v.shape)}, v.shape)
        if v is None or isinstance(v, (int, float, str, bool)):
            return v
        raise ExportError(f"encode returns {type(v).__name__} as {path}: the decoder can read tensors, length masks and zeros")

    for i, (path, v) in enumerate(st_leaves):
        ph = f"state_{i}"
        names.append(ph)
        if not isinstance(v, (T, Zeros)) or (isinstance(v, T) and v.kind is not None):
            raise ExportError(f"{path}: recurrent state must be a tensor the encoder computes, or zeros")
        t = from_encoder(path, v)
        placeholders[ph] = t
        state_inputs.append(t)
    for j, (path, v) in enumerate(mem_leaves):
        ph = f"memory_{j}"
        names.append(ph)
        placeholders[ph] = from_encoder(path, v)
    n_state = len(st_leaves)

    def step_flat(m, token, *flat):
        st = _unflatten(st_spec, flat[:n_state])
        mem = _unflatten(mem_spec, flat[n_state:])
        return step(m, token, st, mem)

    fxd, droot = trace(model, step_flat, names)
    md = make_mapper(droot, d, weights, step_mode=True)
    res = md.run(fxd, placeholders)
    md.node = list(fxd.nodes)[-1]
    if not isinstance(res, (tuple, list)) or len(res) not in (2, 3):
        raise ExportError("step(token, state, memory) must return (logits, state) or (logits, state, attention)")
    logits = md.tensor(res[0], "the logits")
    if logits.shape not in ((B, logits.shape[-1]), (B, 1, logits.shape[-1])):
        raise ExportError(f"step returns logits {_dims_str(logits.shape)}, expected [B, vocab]")
    logits = md.reshape(logits, (B, logits.shape[-1]))
    new_leaves = []
    _flatten(res[1], "state", new_leaves)
    if len(new_leaves) != n_state:
        raise ExportError(f"step returns {len(new_leaves)} state tensors for {n_state} it was given")
    for (path, v), inp in zip(new_leaves, state_inputs):
        t = md.tensor(v, f"the new {path}")
        if t.shape != inp.shape:
            raise ExportError(f"step returns {path} {_dims_str(t.shape)} for state {_dims_str(inp.shape)}")
        if t.name != inp.name:
            d.inputs[inp.name]["next"] = t.name
    d.outputs["logits"] = logits.name
    if len(res) == 3 and res[2] is not None:
        a = md.tensor(res[2], "the attention")
        if a.shape not in ((B, S), (B, 1, S)):
            raise ExportError(f"step returns attention {_dims_str(a.shape)}, expected [B, S]")
        d.outputs["attention"] = md.reshape(a, (B, S)).name
    keep = list(d.outputs.values()) + [spec["next"] for spec in d.inputs.values() if "next" in spec]
    used = simplify(d, keep) | set(keep)
    for name in list(d.inputs):
        if name not in used and d.inputs[name]["from"] not in ("token",):
            del d.inputs[name]
    # The encoder's outputs: what the decoder reads, and the usual roles.
    for spec in d.inputs.values():
        if spec["from"].startswith("encoder:"):
            t = spec["from"][8:]
            e.outputs[_name(encoder_reads[t])] = t
    roles = {}
    for path, v in mem_leaves:
        if isinstance(v, T) and v.kind is None:
            key = path.split(".")[-1]
            if key in ("memory", "keys"):
                roles[key] = v.name
            elif "memory" not in roles and len(v.shape) == 3 and v.shape[:2] == (B, S):
                roles["memory"] = v.name
    if st_leaves and isinstance(st_leaves[0][1], T):
        roles["initial_state"] = st_leaves[0][1].name
        if len(st_leaves) > 1 and isinstance(st_leaves[1][1], T) and st_leaves[1][1].shape == st_leaves[0][1].shape:
            roles["initial_cell"] = st_leaves[1][1].name
    for role, name in roles.items():
        e.outputs.setdefault(role, name)
    simplify(e, list(e.outputs.values()))
    _check_weights_named(weights)
    return {"encoder": e.json(), "decoder_step": d.json()}, weights
