#!/usr/bin/python3
"""ctest entries for the benchmark tools (bench/CMakeLists.txt), so they never rot. They check
that the tools run and emit JSON valid against bench/schema.json; no timing is judged.

  smoke_test.py vkrnn   --bench BIN --work-dir DIR  smallest row of each family, 2 repetitions,
                                                    validation layer on, plus CLI error paths
  smoke_test.py grid    --bench BIN                 vkrnn-bench's rows and filters agree with
                                                    torch_baseline.py's
  smoke_test.py torch   --work-dir DIR              torch_baseline.py, one tiny row per family
                                                    (exit 77 = skipped when torch is missing,
                                                    unless VKRNN_REQUIRE_TORCH=1)
  smoke_test.py compare --work-dir DIR              compare.py on synthetic results: Markdown
                                                    cells, ratios and a decodable PNG
"""
import argparse
import copy
import json
import os
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
SMALLEST = ["W1.*/B=1,S=64,H=256", "W2.*/B=1,T=64,H=256", "W3.b1", "W4/B=1,S=256,*", "K.gru/B=1,"]


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def fail(msg, proc=None):
    if proc is not None:
        sys.stdout.write(proc.stdout[-4000:])
        sys.stderr.write(proc.stderr[-4000:])
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def validate(path, *extra):
    p = run([PY, os.path.join(HERE, "validate_results.py"), path, *extra])
    print(p.stdout, end="")
    if p.returncode != 0:
        fail(f"{path} does not validate", p)


def filters(patterns):
    return [a for pat in patterns for a in ("--filter", pat)]


def listing(cmd):
    p = run(cmd)
    if p.returncode != 0:
        fail("listing rows failed", p)
    return [line for line in p.stdout.splitlines() if line]


def test_vkrnn(args):
    os.makedirs(args.work_dir, exist_ok=True)
    out = os.path.join(args.work_dir, "vkrnn.json")
    rows = listing([args.bench, "--list", *filters(SMALLEST)])
    print(f"rows: {rows}")
    cmd = [args.bench, "--repetitions", "2", "--warmup", "1", "--validation", "--out", out]
    cmd += filters(SMALLEST) if rows else ["--ceilings-only"]
    p = run(cmd)
    print(p.stdout, end="")
    if p.returncode != 0:
        fail(f"vkrnn-bench exited {p.returncode}", p)
    validate(out, "--tool", "vkrnn-bench", "--min-rows", str(len(rows)))
    with open(out) as f:
        doc = json.load(f)
    for d in doc["devices"]:
        c = d["ceilings"]
        if c is None or not all(c[k] and c[k] > 0 for k in
                                ("copy_shader_gbps", "read_shader_gbps", "copy_buffer_gbps", "empty_submit_us")):
            fail(f"{d['name']}: ceilings missing or not positive: {c}")
        names = [r["name"] for r in d["rows"]]
        if sorted(names) != sorted(rows):
            fail(f"{d['name']}: ran {names}, expected {rows}")
        for r in d["rows"]:
            # Streamed W3 rows: a submission per piece of stream_steps steps and one for the
            # results (docs/runtime.md, "Streaming"), the first token timed, no profile.
            k = r["params"].get("stream_steps")
            submissions = 1 if k is None else -(-r["params"]["steps"] // k) + 1
            if r["repetitions"] != 2 or r["dispatches"] < 1 or r["submissions"] != submissions:
                fail(f"{r['name']}: repetitions/dispatches/submissions {r['repetitions']}/"
                     f"{r['dispatches']}/{r['submissions']} (expected {submissions} submissions)")
            if k is not None and not (r.get("first_token_us") and r["first_token_us"]["min"] > 0):
                fail(f"{r['name']}: first_token_us missing or not positive: {r.get('first_token_us')}")
            # Per-kernel GPU time on timestamped devices: every dispatch counted, the medians
            # adding up to about the row's own (a median of sums is no sum of medians).
            if d["timestamps"] and k is None:
                ks = r.get("kernels") or []
                if sum(k["dispatches"] for k in ks) != r["dispatches"]:
                    fail(f"{r['name']}: kernels {ks} do not count its {r['dispatches']} dispatches")
                total = sum(k["gpu_us"] for k in ks)
                if not 0.5 * r["gpu_us"]["median"] <= total <= 2.0 * r["gpu_us"]["median"] + 1.0:
                    fail(f"{r['name']}: kernels add up to {total:.1f} us, gpu_us median {r['gpu_us']['median']:.1f}")
            # Kernel rows: bytes read + written, and on timestamped devices the kernels' own rate.
            if r["id"].startswith("K.") and (not r.get("bytes") or not r["copy_fraction"] or
                                             (d["timestamps"] and not r.get("gpu_copy_fraction"))):
                fail(f"{r['name']}: bytes / copy_fraction / gpu_copy_fraction missing: {r}")
            # The host's CPU time over the repetitions: on a CPU driver its workers are threads
            # of the bench, so a row that computed anything took some.
            cpu = r.get("host_cpu_us")
            if not cpu or r.get("host_threads") is None or (d["device_type"] == "cpu" and not r["host_threads"] > 0.1):
                fail(f"{r['name']}: host_cpu_us / host_threads missing or, on a CPU device, near 0: {cpu} / {r.get('host_threads')}")
            # Rows with bytes: the copy shader measured beside them, and the fractions against it.
            if r.get("bytes") and (not r.get("copy_shader_gbps_near") or not r.get("copy_fraction_near") or
                                   (d["timestamps"] and not r.get("gpu_copy_fraction_near"))):
                fail(f"{r['name']}: copy_shader_gbps_near / copy_fraction_near / gpu_copy_fraction_near missing: {r}")
    # Bad input: clear errors, no JSON.
    for bad, why in ((["--repetitions", "0"], "--repetitions 0"),
                     (["--filter", "W9.nothing"], "a filter matching no row"),
                     (["--device", "no-such-device-anywhere"], "an unknown device")):
        p = run([args.bench, *bad, "--no-ceilings", "--out", os.path.join(args.work_dir, "bad.json")])
        if p.returncode == 0 or not p.stderr.strip():
            fail(f"{why} must fail with a message (rc {p.returncode})", p)
        print(f"  {why}: rc {p.returncode}: {p.stderr.strip().splitlines()[-1]}")


def test_grid(args):
    vk_all = listing([args.bench, "--list"])
    torch_cmd = [PY, os.path.join(HERE, "torch_baseline.py"), "--list"]
    torch_all = listing(torch_cmd)
    missing = sorted(set(vk_all) - set(torch_all))
    if missing:
        fail(f"vkrnn-bench rows unknown to torch_baseline.py (names must match): {missing}")
    for pat in ["W1.dot", "W2", "W1.*/B=16,*", "W3.b1", "W4/*causal=true", "W1.general/B=1,", "K.gemv/B=1,", "K"]:
        vk = listing([args.bench, "--list", "--filter", pat]) if any(
            n for n in vk_all) else []
        expect = [n for n in listing(torch_cmd + ["--filter", pat]) if n in set(vk_all)]
        if sorted(vk) != sorted(expect):
            fail(f"--filter {pat!r}: vkrnn-bench {vk} vs torch_baseline {expect}")
    print(f"{len(vk_all)} vkrnn-bench rows, all in torch_baseline.py's {len(torch_all)}")


def test_torch(args):
    os.makedirs(args.work_dir, exist_ok=True)
    out = os.path.join(args.work_dir, "torch.json")
    p = run([PY, os.path.join(HERE, "torch_baseline.py"), "--repetitions", "2", "--warmup", "1",
             "--device", "cpu", "--out", out, *filters(SMALLEST)])
    if p.returncode == 77:
        if os.environ.get("VKRNN_REQUIRE_TORCH") == "1":
            fail("torch is missing and VKRNN_REQUIRE_TORCH=1", p)
        print("SKIP: torch is not importable by " + PY)
        sys.exit(77)
    if p.returncode != 0:
        fail(f"torch_baseline.py exited {p.returncode}", p)
    validate(out, "--tool", "torch_baseline", "--min-rows", "7")
    with open(out) as f:
        doc = json.load(f)
    for r in doc["devices"][0]["rows"]:
        b = r["backend"]
        if not b["blas"] or not b["threads"] or str(b["threads"]) not in doc["devices"][0]["name"]:
            fail(f"{r['name']}: BLAS library and thread count must be named: {b}")
        if not r.get("host_cpu_us") or not r.get("host_threads"):
            fail(f"{r['name']}: the process's CPU time over the repetitions is missing")
        if "stream_steps" in r["params"] and not (r.get("first_token_us") and r["first_token_us"]["min"] > 0):
            fail(f"{r['name']}: first_token_us missing or not positive: {r.get('first_token_us')}")


def synthetic():
    row = {"id": "W1.dot", "name": "W1.dot/B=1,S=64,H=256", "params": {"B": 1, "S": 64, "H": 256},
           "precision": "fp32", "repetitions": 20, "warmup": 3, "gpu_us": None,
           "wall_us": {"median": 100.0, "min": 90.0, "max": 130.0}, "record_us": None,
           "host_cpu_us": {"median": 190.0, "min": 170.0, "max": 250.0}, "host_threads": 1.9,
           "gbps": 0.66, "gflops": 0.66, "tokens_per_s": None, "us_per_step": None,
           "copy_fraction": None, "dispatches": None, "submissions": None,
           "backend": {"name": "torch 1.13", "blas": "openblas", "threads": 2}}
    dev = {"index": None, "name": "Base CPU", "vendor": "amd", "vendor_id": None,
           "device_type": "cpu", "driver_name": "torch", "driver_version": "1.13",
           "api_version": None, "subgroup_size": None, "timestamps": False, "validation": False,
           "ceilings": {"copy_shader_gbps": 40.0, "copy_buffer_gbps": None,
                        "empty_dispatch_us": 2.0, "empty_submit_us": None},
           "rows": [row], "skipped": []}
    base = {"schema_version": 1, "tool": "torch_baseline", "created": "2026-01-01T00:00:00+00:00",
            "host": {"os": "Linux", "cpu": "test", "cores": 2}, "devices": [dev]}
    other = copy.deepcopy(base)
    other["tool"] = "vkrnn-bench"
    d = other["devices"][0]
    d.update(name="Fast GPU", index=0, vendor_id=4318, api_version="1.3.0", subgroup_size=32,
             device_type="discrete")
    d["rows"][0].update(wall_us={"median": 25.0, "min": 20.0, "max": 30.0}, gbps=2.64,
                        dispatches=3, submissions=1,
                        host_cpu_us={"median": 1.0, "min": 1.0, "max": 2.0}, host_threads=0.04)
    d["rows"].append(dict(copy.deepcopy(d["rows"][0]), id="W4", name="W4/B=1,S=256,d=64,causal=true",
                          params={"B": 1, "S": 256, "d": 64, "causal": True}, gbps=None))
    d["rows"].append(dict(copy.deepcopy(d["rows"][0]), id="K.gemv", name="K.gemv/B=1,N=8000,K=1024",
                          params={"B": 1, "N": 8000, "K": 1024}, gbps=4.0, copy_fraction=0.4, bytes=1e8,
                          copy_shader_gbps_near=32.0, copy_fraction_near=0.125, read_fraction=0.05))
    d["rows"].append(dict(copy.deepcopy(d["rows"][0]), id="W3.b1",
                          name="W3.b1/B=1,S=32,steps=32,E=256,H=256,vocab=8000,stream_steps=1",
                          params={"B": 1, "S": 32, "steps": 32, "E": 256, "H": 256, "vocab": 8000,
                                  "stream_steps": 1},
                          gbps=None, gflops=None, tokens_per_s=1280.0, us_per_step=0.78,
                          submissions=33, first_token_us={"median": 2.5, "min": 2.0, "max": 3.0}))
    d["ceilings"]["read_shader_gbps"] = 80.0
    d["skipped"].append({"name": "W1.dot/B=16,S=4096,H=512", "reason": "too big"})
    return base, other


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("not a PNG signature")
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            fail(f"bad CRC in chunk {kind}")
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = zlib.decompress(idat)
    if len(raw) != h * (1 + 3 * w):
        fail(f"PNG data {len(raw)} bytes for {w}x{h}")
    return w, h, raw


def test_compare(args):
    os.makedirs(args.work_dir, exist_ok=True)
    base, other = synthetic()
    paths = []
    for name, doc in (("base.json", base), ("other.json", other)):
        paths.append(os.path.join(args.work_dir, name))
        with open(paths[-1], "w") as f:
            json.dump(doc, f)
        validate(paths[-1])
    # A fraction that is not its rate over its ceiling is refused: a _near one over the row's
    # copy_shader_gbps_near, a read one over the ceilings' read_shader_gbps; so is a
    # host_threads that is not the CPU time over the wall time.
    for field, basis in (("copy_fraction_near", "gbps / copy_shader_gbps_near"),
                         ("read_fraction", "gbps / read_shader_gbps"), ("host_threads", "host_cpu_us / wall_us")):
        bad = copy.deepcopy(other)
        bad["devices"][0]["rows"][-1][field] = 0.5
        bad_path = os.path.join(args.work_dir, f"bad-{field}.json")
        with open(bad_path, "w") as f:
            json.dump(bad, f)
        p = run([PY, os.path.join(HERE, "validate_results.py"), bad_path])
        if p.returncode == 0 or field not in p.stdout + p.stderr:
            fail(f"validate_results.py must refuse a {field} that is not {basis}", p)
    # first_token_us on a row without stream_steps, or later than the repetition's end.
    for what, change in (("without stream_steps", lambda r: r["params"].pop("stream_steps")),
                         ("beyond wall_us", lambda r: r["first_token_us"].update(median=26.0, max=31.0))):
        bad = copy.deepcopy(other)
        change(bad["devices"][0]["rows"][3])
        bad_path = os.path.join(args.work_dir, "bad-first-token.json")
        with open(bad_path, "w") as f:
            json.dump(bad, f)
        p = run([PY, os.path.join(HERE, "validate_results.py"), bad_path])
        if p.returncode == 0 or "first_token_us" not in p.stdout + p.stderr:
            fail(f"validate_results.py must refuse first_token_us {what}", p)
    md, png = os.path.join(args.work_dir, "compare.md"), os.path.join(args.work_dir, "compare.png")
    p = run([PY, os.path.join(HERE, "compare.py"), *paths, "--baseline", "base cpu",
             "--markdown", md, "--png", png])
    if p.returncode != 0:
        fail("compare.py failed", p)
    with open(md) as f:
        text = f.read()
    # "thr" (host_threads) in the CPU column's cells only.
    for needle in ("| `W1.dot/B=1,S=64,H=256` | 100 µs · 0.660 GB/s · 1.9 thr | 25.0 µs · 2.64 GB/s · **4.00×** |",
                   "`W4/B=1,S=256,d=64,causal=true`", "too big", "25.0 µs · 4.00 GB/s · 40% copy, 12% beside, 5% read |",
                   "| copy shader, GB/s (read + write) | 40.0 | 40.0 |", "| read shader, GB/s (read) | – | 80.0 |",
                   "0.0250 ms · 1,280 tok/s · first token 0.00250 ms |"):
        if needle not in text:
            fail(f"compare.md lacks {needle!r}:\n{text}")
    w, h, raw = read_png(png)
    if w < 200 or h < 50 or len(set(raw)) < 3:
        fail(f"PNG {w}x{h} looks empty")
    p = run([PY, os.path.join(HERE, "compare.py"), *paths, "--baseline", "no such column"])
    if p.returncode == 0 or "no column matches" not in p.stderr:
        fail("an unknown --baseline must fail with a message", p)
    print(f"compare.py: Markdown ok, PNG {w}x{h}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["vkrnn", "grid", "torch", "compare"])
    ap.add_argument("--bench", help="path of vkrnn-bench")
    ap.add_argument("--work-dir", default="bench-smoke")
    args = ap.parse_args()
    {"vkrnn": test_vkrnn, "grid": test_grid, "torch": test_torch, "compare": test_compare}[args.mode](args)
    print("PASS")


if __name__ == "__main__":
    main()
