#!/usr/bin/env python3
"""Runs a sample program and checks what it did (ctest driver for samples/CMakeLists.txt).

    check_sample.py [checks] -- PROGRAM [ARGS...]

checks:
  --exit N             expected exit status (default 0)
  --expect REGEX       must match the program's output (stdout + stderr; re.MULTILINE); repeatable
  --reject REGEX       must not match it; repeatable
  --stdin TEXT         feed TEXT to the program's stdin (else it reads nothing)
  --png PATH           the program must write PATH (deleted first): a valid PNG -- signature,
                       chunk CRCs, IHDR, IDAT that inflates to exactly the image's size, IEND
  --png-min-size WxH   and at least this big
  --corrupt-copy SRC DST
                       before running, copy model directory SRC to DST with its weights file
                       cut in half (a corrupt model for an error test)

Only the standard library: runs with any Python 3.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib


def check_png(path, min_size):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return f"{path}: no PNG signature"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        if pos + 8 > len(data):
            return f"{path}: truncated chunk header at byte {pos}"
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            return f"{path}: truncated {kind!r} chunk"
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            return f"{path}: bad CRC in {kind!r} chunk"
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if not chunks or chunks[0] != b"IHDR" or chunks[-1] != b"IEND" or b"IDAT" not in chunks:
        return f"{path}: chunks {chunks}: need IHDR first, IDAT, IEND last"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        return f"{path}: unexpected format (depth {depth}, colour type {colour}, interlace {interlace})"
    raw = zlib.decompress(idat)
    if len(raw) != height * (1 + width * channels):
        return f"{path}: image data is {len(raw)} bytes, {width}x{height}x{channels} needs " \
               f"{height * (1 + width * channels)}"
    if min_size and (width < min_size[0] or height < min_size[1]):
        return f"{path}: {width}x{height} is smaller than {min_size[0]}x{min_size[1]}"
    print(f"check_sample: {path}: valid PNG, {width}x{height}, {channels} channels")
    return None


def main():
    if "--" not in sys.argv:
        sys.exit("check_sample.py: usage: check_sample.py [checks] -- PROGRAM [ARGS...]")
    split = sys.argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("--exit", type=int, default=0)
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--reject", action="append", default=[])
    ap.add_argument("--stdin", default="")
    ap.add_argument("--png")
    ap.add_argument("--png-min-size")
    ap.add_argument("--corrupt-copy", nargs=2, metavar=("SRC", "DST"))
    args = ap.parse_args(sys.argv[1:split])
    command = sys.argv[split + 1:]

    if args.corrupt_copy:
        src, dst = args.corrupt_copy
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        weights = os.path.join(dst, "model.safetensors")
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:
            f.truncate(size // 2)
    if args.png and os.path.exists(args.png):
        os.remove(args.png)

    proc = subprocess.run(command, input=args.stdin.encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    output = proc.stdout.decode("utf-8", errors="replace")
    sys.stdout.write(output)
    failures = []
    if proc.returncode != args.exit:
        failures.append(f"exit status {proc.returncode}, expected {args.exit}")
    for pattern in args.expect:
        if not re.search(pattern, output, re.MULTILINE):
            failures.append(f"output does not match /{pattern}/")
    for pattern in args.reject:
        if re.search(pattern, output, re.MULTILINE):
            failures.append(f"output matches /{pattern}/")
    if args.png:
        if not os.path.exists(args.png):
            failures.append(f"{args.png} was not written")
        else:
            min_size = tuple(int(x) for x in args.png_min_size.split("x")) if args.png_min_size else None
            problem = check_png(args.png, min_size)
            if problem:
                failures.append(problem)
    for f in failures:
        print(f"check_sample: FAILED: {f}")
    if not failures:
        print("check_sample: passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
