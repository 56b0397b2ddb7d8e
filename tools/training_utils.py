"""Helpers the sample trainers (train_dates.py, train_sentiment.py) share: the common command
line, distinct generated examples and the held-out files' "text<TAB>target" lines."""
import argparse
import os
import random


def sample_parser(description, sample):
    """An argument parser with the options every trainer takes: --out (default samples/<sample>/
    of this checkout) and --threads (default 2)."""
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=os.path.join(here, "..", "samples", sample))
    ap.add_argument("--threads", type=int, default=2)
    return ap


def distinct_pairs(generate, seed, count, exclude=()):
    """count (text, target) pairs from generate(rng), rng seeded with seed, with distinct texts
    none of which is in exclude."""
    rng = random.Random(seed)
    seen = set(exclude)
    out = []
    while len(out) < count:
        text, target = generate(rng)
        if text in seen:
            continue
        seen.add(text)
        out.append((text, target))
    return out


def read_tab_pairs(path, target=lambda t: t):
    """The (text, target(field)) pairs of path's non-empty "text<TAB>field" lines."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                text, field = line.split("\t")
                pairs.append((text, target(field)))
    return pairs


def write_tab_pairs(path, pairs, field=str):
    """Writes (text, target) pairs as "text<TAB>field(target)" lines (read_tab_pairs reads them)."""
    with open(path, "w", encoding="utf-8") as f:
        for text, target in pairs:
            f.write(f"{text}\t{field(target)}\n")
