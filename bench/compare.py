#!/usr/bin/python3
"""Puts benchmark JSON files (vkrnn-bench and torch_baseline.py, bench/schema.json) side by
side: devices as columns, workload rows as rows, with the speed-up of every column over a
chosen baseline column. Writes a Markdown table and a PNG bar chart.

  compare.py results/*.json --baseline "PyTorch CPU" --markdown README.md --png chart.png

Times compared are wall-clock medians (what bench/SCHEMA.md bases every rate on);
speed-up = baseline median / column median, so > 1 means faster than the baseline.
The PNG is written by a small pure-Python encoder (zlib + struct) with a built-in 5x7 font,
so no plotting package is needed.
"""
import argparse
import json
import math
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_baseline  # noqa: E402  (the canonical row order; does not import torch)

FAMILIES = {
    "W1": ("W1 — decoder attention step", "µs per step, GB/s of memory read"),
    "W2": ("W2 — recurrent layer over T = 64", "ms per sequence, µs per timestep"),
    "W3": ("W3 — seq2seq decode, 32 steps (greedy; beam=4: beam search of width 4)",
           "ms per decode (encode included), tokens/s"),
    "W4": ("W4 — self-attention, d = 64", "ms, GFLOP/s (4·S²·d, causal counted as full)"),
    "K": ("K — single kernels of the W3 decode step (output GEMV, GRU step)",
          "µs per repetition (several dispatches, bench/SCHEMA.md), GB/s read + written, "
          "% of the same run's copy shader (and of the copy shader measured beside the row, and of the "
          "read shader)"),
}


def copy_percent(row):
    """The kernels' share of the copy shader's bandwidth: over GPU time where the row has it
    (gpu_copy_fraction, the basis the copy ceiling is timed on), else over wall time; then,
    where the row has it, the same against the copy shader measured beside the row (_near), and
    against the read shader (read_fraction)."""
    gpu = row.get("gpu_copy_fraction") is not None
    f = row.get("gpu_copy_fraction" if gpu else "copy_fraction")
    if f is None:
        return ""
    near = row.get("gpu_copy_fraction_near" if gpu else "copy_fraction_near")
    beside = f", {100 * near:.0f}% beside" if near is not None else ""
    read = row.get("gpu_read_fraction" if gpu else "read_fraction")
    reads = f", {100 * read:.0f}% read" if read is not None else ""
    return f" · {100 * f:.0f}% copy{beside}{reads}" + (" (GPU time)" if gpu else "")


# ---------------------------------------------------------------------------------------------
# Loading

class Column:
    def __init__(self, path, doc, dev):
        self.path, self.doc, self.dev = path, doc, dev
        self.label = dev["name"]
        self.rows = {r["name"]: r for r in dev["rows"]}


def load(paths):
    columns = []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        if doc.get("schema_version") != 1:
            raise SystemExit(f"compare: {path}: schema_version {doc.get('schema_version')!r}, expected 1")
        for dev in doc["devices"]:
            columns.append(Column(path, doc, dev))
    # The same device from two files (two runs, two machines): tell them apart by file name.
    for c in columns:
        if sum(1 for o in columns if o.label == c.label) > 1:
            c.label = f"{c.label} [{os.path.basename(c.path)}]"
    return columns


def row_order(columns):
    canonical = [torch_baseline.row_name(w, p) for w, p in torch_baseline.all_rows()]
    rank = {n: i for i, n in enumerate(canonical)}
    names = {n for c in columns for n in c.rows}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def pick_baseline(columns, needle):
    if needle is None:
        return columns[0]
    hits = [c for c in columns if needle.lower() in c.label.lower()]
    if not hits:
        raise SystemExit(f"compare: no column matches --baseline {needle!r}; columns: "
                         + ", ".join(c.label for c in columns))
    return hits[0]


def speedup(base_row, row):
    if not base_row or not row:
        return None
    return base_row["wall_us"]["median"] / row["wall_us"]["median"]


# ---------------------------------------------------------------------------------------------
# Markdown

def fmt_num(x, digits=3):
    if x is None:
        return "–"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def cell(row, ratio, cpu_device=False):
    if row is None:
        return "–"
    fam = row["id"][:2]
    w = row["wall_us"]
    if fam == "W1" or fam == "K.":
        text = f"{fmt_num(w['median'])} µs · {fmt_num(row['gbps'])} GB/s" + copy_percent(row)
    elif fam == "W2":
        text = f"{fmt_num(w['median'] / 1000)} ms · {fmt_num(row['us_per_step'])} µs/step"
    elif fam == "W3":
        text = f"{fmt_num(w['median'] / 1000)} ms · {fmt_num(row['tokens_per_s'])} tok/s"
        if row.get("first_token_us"):  # streamed rows
            text += f" · first token {fmt_num(row['first_token_us']['median'] / 1000)} ms"
    else:
        text = f"{fmt_num(w['median'] / 1000)} ms · {fmt_num(row['gflops'])} GFLOP/s"
    if cpu_device and row.get("host_threads") is not None:
        # How many CPU threads the row kept busy: a lavapipe row near 1 ran on one worker.
        text += f" · {row['host_threads']:.1f} thr"
    if ratio is not None:
        text += f" · **{ratio:.2f}×**"
    return text


def escape(s):
    return str(s).replace("|", "\\|")


def markdown(columns, base, names, title, notes=()):
    out = [f"# {title}", ""]
    for note in notes:
        out += [note, ""]
    out.append(f"Baseline: **{escape(base.label)}**. Each cell: median wall-clock time over the "
               "timed repetitions, the row's rate, and **the speed-up over the baseline** "
               "(baseline median / this median; > 1 = faster). On CPU devices, \"thr\": the "
               "process's CPU time over its wall time, the threads the row kept busy (a lavapipe "
               "row near 1.0 ran on one of its workers, bench/SCHEMA.md). Min/max, GPU timestamps, "
               "dispatch counts and the exact method are in the JSON files (bench/SCHEMA.md).")
    out += ["", "## Devices", "",
            "| column | vendor | type | driver | Vulkan | repetitions | tool | file | created | host |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in columns:
        d, h = c.dev, c.doc["host"]
        reps = sorted({r["repetitions"] for r in d["rows"]}) or ["–"]
        out.append("| " + " | ".join(escape(x) for x in [
            c.label, d["vendor"], d["device_type"], f"{d['driver_name']} {d['driver_version']}" + (f" ({d['driver_info']})" if d.get("driver_info") else ""),
            d["api_version"] or "–", "/".join(map(str, reps)), c.doc["tool"],
            os.path.basename(c.path), c.doc["created"],
            f"{h['cpu']}, {h['cores']} cores, {h['os']}"
            + (f", load {h['load_avg'][0]:.1f} at start" if h.get("load_avg") else "")]) + " |")
    out += ["", "## Device ceilings (measured in the same run)", "",
            "| | " + " | ".join(escape(c.label) for c in columns) + " |",
            "|---|" + "---|" * len(columns)]
    for key, label in (("copy_shader_gbps", "copy shader, GB/s (read + write)"),
                       ("read_shader_gbps", "read shader, GB/s (read)"),
                       ("copy_buffer_gbps", "vkCmdCopyBuffer, GB/s (read + write)"),
                       ("empty_dispatch_us", "empty dispatch, µs (marginal)"),
                       ("empty_submit_us", "submit + wait, µs")):
        out.append(f"| {label} | " + " | ".join(
            fmt_num((c.dev["ceilings"] or {}).get(key)) for c in columns) + " |")
    out.append("| copy shader before / after the rows, GB/s | " + " | ".join(
        " / ".join(fmt_num(x) for x in (c.dev["ceilings"] or {}).get("copy_shader_gbps_runs") or []) or "–"
        for c in columns) + " |")
    out.append("| copy shader reads from | " + " | ".join(
        escape(((c.dev["ceilings"] or {}).get("copy_shader_config") or {}).get("reads", "–"))
        for c in columns) + " |")
    out += ["", "The copy shader is the faster of two read paths where the device offers both: storage "
            "buffers, and uniform texel buffers (the kernels' loads on CPU drivers, docs/kernels.md). "
            "It is measured before and after the rows; the fractions use the larger.",
            "", "PyTorch columns: the copy is a 64 MiB `Tensor.copy_`, the \"empty dispatch\" one "
            "tiny op (`add_` on one element), submit + wait is `torch.cuda.synchronize()` (CUDA only)."]
    for fam, (heading, units) in FAMILIES.items():
        fam_names = [n for n in names if n.startswith(fam)]
        if not fam_names:
            continue
        out += ["", f"## {heading}", "", f"Units: {units}.", "",
                "| row | " + " | ".join(escape(c.label) for c in columns) + " |",
                "|---|" + "---|" * len(columns)]
        for n in fam_names:
            b = base.rows.get(n)
            cells = []
            for c in columns:
                r = c.rows.get(n)
                cells.append(cell(r, speedup(b, r) if c is not base else None, c.dev["device_type"] == "cpu"))
            out.append(f"| `{n}` | " + " | ".join(cells) + " |")
    out += kernel_shares(columns, [n for n in names if n.startswith("W3")])
    skipped = [(c, s) for c in columns for s in c.dev["skipped"]]
    if skipped:
        out += ["", "## Skipped rows", ""]
        out += [f"- {escape(c.label)}: `{s['name']}` — {escape(s['reason'])}" for c, s in skipped]
    return "\n".join(out) + "\n"


def kernel_shares(columns, names):
    """Where each W3 row's GPU time goes, per column that timed its kernels (the rows'
    "kernels": the slowest first, with dispatches per decode and the share of gpu_us)."""
    out = []
    for c in columns:
        rows = [c.rows[n] for n in names if n in c.rows and c.rows[n].get("kernels")]
        if not rows:
            continue
        if not out:
            out += ["", "## W3: GPU time per kernel", "",
                    "Per decode (one repetition): each kernel's dispatches and its share of the row's "
                    "summed dispatch timestamps (`gpu_us`; the gaps between dispatches are not in it)."]
        out += ["", f"{escape(c.label)}:", "", "| row | kernels (dispatches, share of GPU time) |", "|---|---|"]
        for r in rows:
            total = sum(k["gpu_us"] for k in r["kernels"]) or 1.0
            parts = [f"`{k['kernel']}` ×{k['dispatches']} {100 * k['gpu_us'] / total:.0f}%" for k in r["kernels"]]
            out.append(f"| `{r['name']}` | " + ", ".join(parts) + " |")
    return out


# ---------------------------------------------------------------------------------------------
# PNG: a tiny RGB canvas, a 5x7 bitmap font and an encoder.

# Glyphs in blocks of up to 8: a line naming the characters, then 7 rows of 5-pixel cells.
_FONT_ART = r"""
 !"#$%&'
..... ..#.. .#.#. .#.#. ..#.. ##... .##.. ..#..
..... ..#.. .#.#. .#.#. .#### ##..# #..#. ..#..
..... ..#.. ..... ##### #.#.. ...#. #.#.. .#...
..... ..#.. ..... .#.#. .###. ..#.. .#... .....
..... ..#.. ..... ##### ..#.# .#... #.#.# .....
..... ..... ..... .#.#. ####. #..## #..#. .....
..... ..#.. ..... .#.#. ..#.. ...## .##.# .....
()*+,-./
...#. .#... ..... ..... ..... ..... ..... .....
..#.. ..#.. ..#.. ..#.. ..... ..... ..... ....#
.#... ...#. #.#.# ..#.. ..... ..... ..... ...#.
.#... ...#. .###. ##### ..... ##### ..... ..#..
.#... ...#. #.#.# ..#.. .##.. ..... ..... .#...
..#.. ..#.. ..#.. ..#.. ..#.. ..... .##.. #....
...#. .#... ..... ..... .#... ..... .##.. .....
01234567
.###. ..#.. .###. ##### ...#. ##### ..##. #####
#...# .##.. #...# ...#. ..##. #.... .#... ....#
#..## ..#.. ....# ..#.. .#.#. ####. #.... ...#.
#.#.# ..#.. ...#. ...#. #..#. ....# ####. ..#..
##..# ..#.. ..#.. ....# ##### ....# #...# .#...
#...# ..#.. .#... #...# ...#. #...# #...# .#...
.###. .###. ##### .###. ...#. .###. .###. .#...
89:;<=>?
.###. .###. ..... ..... ...#. ..... .#... .###.
#...# #...# .##.. .##.. ..#.. ..... ..#.. #...#
#...# #...# .##.. .##.. .#... ##### ...#. ....#
.###. .#### ..... ..... #.... ..... ....# ...#.
#...# ....# .##.. .##.. .#... ##### ...#. ..#..
#...# ...#. .##.. ..#.. ..#.. ..... ..#.. .....
.###. .##.. ..... .#... ...#. ..... .#... ..#..
@ABCDEFG
.###. .###. ####. .###. ###.. ##### ##### .###.
#...# #...# #...# #...# #..#. #.... #.... #...#
....# #...# #...# #.... #...# #.... #.... #....
.##.# ##### ####. #.... #...# ####. ####. #.###
#.#.# #...# #...# #.... #...# #.... #.... #...#
#.#.# #...# #...# #...# #..#. #.... #.... #...#
.###. #...# ####. .###. ###.. ##### #.... .####
HIJKLMNO
#...# .###. ..### #...# #.... #...# #...# .###.
#...# ..#.. ...#. #..#. #.... ##.## #...# #...#
#...# ..#.. ...#. #.#.. #.... #.#.# ##..# #...#
##### ..#.. ...#. ##... #.... #.#.# #.#.# #...#
#...# ..#.. ...#. #.#.. #.... #...# #..## #...#
#...# ..#.. #..#. #..#. #.... #...# #...# #...#
#...# .###. .##.. #...# ##### #...# #...# .###.
PQRSTUVW
####. .###. ####. .#### ##### #...# #...# #...#
#...# #...# #...# #.... ..#.. #...# #...# #...#
#...# #...# #...# #.... ..#.. #...# #...# #...#
####. #...# ####. .###. ..#.. #...# #...# #.#.#
#.... #.#.# #.#.. ....# ..#.. #...# #...# #.#.#
#.... #..#. #..#. ....# ..#.. #...# .#.#. #.#.#
#.... .##.# #...# ####. ..#.. .###. ..#.. .#.#.
XYZ[\]^_
#...# #...# ##### .###. ..... .###. ..#.. .....
#...# #...# ....# .#... #.... ...#. .#.#. .....
.#.#. .#.#. ...#. .#... .#... ...#. #...# .....
..#.. ..#.. ..#.. .#... ..#.. ...#. ..... .....
.#.#. ..#.. .#... .#... ...#. ...#. ..... .....
#...# ..#.. #.... .#... ....# ...#. ..... .....
#...# ..#.. ##### .###. ..... .###. ..... #####
`abcdefg
.#... ..... #.... ..... ....# ..... ..##. .....
..#.. ..... #.... ..... ....# ..... .#..# .####
...#. .###. #.##. .###. .##.# .###. .#... #...#
..... ....# ##..# #.... #..## #...# ###.. #...#
..... .#### #...# #.... #...# ##### .#... .####
..... #...# #...# #...# #...# #.... .#... ....#
..... .#### ####. .###. .#### .###. .#... .###.
hijklmno
#.... ..#.. ...#. #.... .##.. ..... ..... .....
#.... ..... ..... #.... ..#.. ..... ..... .....
#.##. .##.. ..##. #..#. ..#.. ##.#. #.##. .###.
##..# ..#.. ...#. #.#.. ..#.. #.#.# ##..# #...#
#...# ..#.. ...#. ##... ..#.. #.#.# #...# #...#
#...# ..#.. #..#. #.#.. ..#.. #...# #...# #...#
#...# .###. .##.. #..#. .###. #...# #...# .###.
pqrstuvw
..... ..... ..... ..... .#... ..... ..... .....
..... ..... ..... ..... .#... ..... ..... .....
####. .##.# #.##. .###. ###.. #...# #...# #...#
#...# #..## ##..# #.... .#... #...# #...# #...#
####. .#### #.... .###. .#... #...# #...# #.#.#
#.... ....# #.... ....# .#..# #..## .#.#. #.#.#
#.... ....# #.... ####. ..##. .##.# ..#.. .#.#.
xyz{|}~
..... ..... ..... ...#. ..#.. .#... .....
..... ..... ..... ..#.. ..#.. ..#.. .....
#...# #...# ##### ..#.. ..#.. ..#.. .#...
.#.#. #...# ...#. .#... ..#.. ...#. #.#.#
..#.. .#### ..#.. ..#.. ..#.. ..#.. ...#.
.#.#. ....# .#... ..#.. ..#.. ..#.. .....
#...# .###. ##### ...#. ..#.. .#... .....
"""


def _parse_font(art):
    lines = art.strip("\n").split("\n")
    font = {}
    for i in range(0, len(lines), 8):
        chars, rows = lines[i], lines[i + 1:i + 8]
        cells = [r.split(" ") for r in rows]
        for k, ch in enumerate(chars):
            font[ch] = [cells[y][k] for y in range(7)]
    return font


FONT = _parse_font(_FONT_ART)
# Letters with descenders: drawn 2 pixels lower than the others, so "gp" does not read "9P".
DESCENDERS = {
    "g": [".####", "#...#", "#...#", ".####", "....#", "#...#", ".###."],
    "p": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
    "q": [".####", "#...#", "#...#", ".####", "....#", "....#", "....#"],
    "y": ["#...#", "#...#", "#...#", ".####", "....#", "#...#", ".###."],
}
GLYPH_W, GLYPH_H, ADVANCE = 5, 9, 6
SUBSTITUTES = {"µ": "u", "×": "x", "—": "-", "–": "-", "·": "."}


class Canvas:
    def __init__(self, width, height, background=(255, 255, 255)):
        self.w, self.h = width, height
        self.px = bytearray(bytes(background) * (width * height))

    def rect(self, x0, y0, x1, y1, color):
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.w + x0) * 3
            self.px[start:start + len(row)] = row

    def text(self, x, y, s, color=(0, 0, 0)):
        for ch in s:
            ch = SUBSTITUTES.get(ch, ch)
            glyph, dy = (DESCENDERS[ch], 2) if ch in DESCENDERS else (FONT.get(ch, FONT["?"]), 0)
            for gy, bits in enumerate(glyph):
                for gx, b in enumerate(bits):
                    if b == "#":
                        self.rect(x + gx, y + dy + gy, x + gx + 1, y + dy + gy + 1, color)
            x += ADVANCE
        return x

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(kind, data):
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
        return (b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def chart(columns, base, names, title):
    """Horizontal bars of log2(speed-up over the baseline) for every row and column."""
    others = [c for c in columns if c is not base]
    bar_h, gap = 7, 5
    label_w = ADVANCE * max([len(n) for n in names] + [10]) + 12
    plot_w = 640
    legend_h = 12 * (len(columns) + 1) + 8
    top = 24 + legend_h + 14
    group_h = max(1, len(others)) * (bar_h + 1) + gap
    fam_breaks = sum(1 for i in range(1, len(names)) if names[i][:2] != names[i - 1][:2])
    height = top + len(names) * group_h + fam_breaks * 6 + 30
    width = label_w + plot_w + 90
    cv = Canvas(width, height)
    cv.text(8, 8, title)
    y = 24
    cv.text(8, y, f"baseline (1x): {base.label}", (80, 80, 80))
    for k, c in enumerate(others):
        y += 12
        cv.rect(8, y, 18, y + 7, PALETTE[k % len(PALETTE)])
        cv.text(24, y, c.label)
    ratios = [speedup(base.rows.get(n), c.rows.get(n)) for n in names for c in others]
    ratios = [r for r in ratios if r]
    span = max([abs(math.log2(r)) for r in ratios] + [1.0])
    span = math.ceil(min(span, 16.0))  # axis: 2^-span .. 2^span
    x_mid = label_w + plot_w // 2

    def x_of(ratio):
        v = max(-span, min(span, math.log2(ratio)))
        return int(x_mid + v / span * (plot_w // 2))

    # Grid: powers of two, labelled at the top.
    step = max(1, span // 4)
    for e in range(-span, span + 1, step):
        x = x_of(2.0 ** e)
        cv.rect(x, top - 2, x + 1, height - 24, (225, 225, 225) if e else (60, 60, 60))
        label = f"{2 ** e:g}x" if e >= 0 else f"1/{2 ** -e:g}x"
        cv.text(x - len(label) * ADVANCE // 2, top - 12, label, (80, 80, 80))
    y = top + 4
    for i, n in enumerate(names):
        if i and n[:2] != names[i - 1][:2]:
            cv.rect(8, y, width - 8, y + 1, (200, 200, 200))
            y += 6
        cv.text(8, y, n)
        for k, c in enumerate(others):
            r = speedup(base.rows.get(n), c.rows.get(n))
            by = y + k * (bar_h + 1)
            if r is None:
                cv.text(x_mid + 4, by, "n/a", (150, 150, 150))
                continue
            cv.rect(x_of(1.0), by, x_of(r), by + bar_h, PALETTE[k % len(PALETTE)])
            tx = max(x_of(r), x_of(1.0)) + 4
            cv.text(tx, by, f"{r:.2g}x", (60, 60, 60))
        y += group_h
    cv.text(8, height - 14, "speed-up = baseline wall median / column wall median "
            "(log2 axis; right of 1x = faster than the baseline)", (80, 80, 80))
    return cv.png()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="results JSON files (bench/schema.json)")
    ap.add_argument("--baseline", help="substring of the baseline column's device name "
                                       "(default: the first column)")
    ap.add_argument("--markdown", help="write the Markdown table here (default: stdout)")
    ap.add_argument("--png", help="write the bar chart here")
    ap.add_argument("--filter", action="append", default=[],
                    help="only rows matching (same rules as vkrnn-bench --filter); repeatable")
    ap.add_argument("--title", default="vkrnn benchmark comparison")
    ap.add_argument("--note", action="append", default=[],
                    help="a Markdown paragraph to put under the title (repeatable)")
    args = ap.parse_args(argv)

    columns = load(args.files)
    if not columns:
        raise SystemExit("compare: the files hold no device")
    base = pick_baseline(columns, args.baseline)
    names = [n for n in row_order(columns)
             if torch_baseline.matches(n.split("/")[0], n, args.filter)]
    md = markdown(columns, base, names, args.title, args.note)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)
    if args.png:
        with open(args.png, "wb") as f:
            f.write(chart(columns, base, names, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
