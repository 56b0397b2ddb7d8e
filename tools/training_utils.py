"""Helpers the sample trainers (train_dates.py, train_sentiment.py) share: distinct generated
examples and the held-out files' "text<TAB>target" lines."""
import random


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
