#!/usr/bin/python3
"""Trains the flagship sample: a character-level Bahdanau encoder-decoder that normalises
free-form dates to ISO 8601, e.g. "Saturday 21 November 2026", "21/11/26", "Nov 21st, 2026",
"2026.11.21" -> "2026-11-21". Exports samples/dates/model/ and samples/dates/heldout.txt.

Conventions of the generated data (so that every input has exactly one answer):
- Years 1950..2049. A two-digit year YY means 19YY when YY >= 50, else 20YY.
- Numeric dates: a leading four-digit number is the year, then month, then day
  ("2026.11.21", "2026/11/21", "2026-11-21", "20261121"); otherwise the order is day, month,
  year whatever the separator ("21/11/26", "21-11-2026", "21.11.2026"). Month-first numeric
  dates (US "11/21/2026") are never generated: the model reads "1/2/2026" as 1 February.
- Text dates: month names full ("November") or abbreviated ("Nov", also "Sept"); days with or
  without ordinal suffix (1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ...), optional weekday
  (full or three-letter, always the right one for the date), "of", commas, "'26" years, any
  case (Title, lower, UPPER), and doubled inner spaces. No leading or trailing spaces.

Usage:
    train_dates.py                       # full run: 2 threads, export to samples/dates/
    train_dates.py --steps 300 --threads 1 --out /tmp/dates   # short development run
    train_dates.py --evaluate samples/dates   # accuracy of an exported model on its heldout.txt
"""

import datetime
import os
import random
import sys
import time

# libgomp's threads spin while waiting by default; on a shared 2-core machine (other jobs
# compiling) that made 2-thread training ~25x slower than 1 thread. Passive waiting fixes it.
# Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torch  # noqa: E402
import training_utils  # noqa: E402
import vkrnn_models as vm  # noqa: E402

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST_DAY = datetime.date(1950, 1, 1)
LAST_DAY = datetime.date(2049, 12, 31)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
SRC_VOCAB = SPECIALS + list(" ,./-'") + list("0123456789") + \
    list("abcdefghijklmnopqrstuvwxyz") + list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
TGT_VOCAB = SPECIALS + list("0123456789-")
SRC_INDEX = {c: i for i, c in enumerate(SRC_VOCAB)}
TGT_INDEX = {c: i for i, c in enumerate(TGT_VOCAB)}
PAD, BOS, EOS, UNK = 0, 1, 2, 3
MAX_DECODE = 12  # "YYYY-MM-DD" + EOS is 11


def two_digit_year(year):
    return year % 100


def year_from_two_digits(yy):
    return 1900 + yy if yy >= 50 else 2000 + yy


def ordinal(day):
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th')}"


def month_name(month, rng):
    full = MONTHS[month - 1]
    r = rng.random()
    if r < 0.5:
        return full
    if month == 9 and r < 0.6:
        return "Sept"
    return full[:3]


def weekday_name(date, rng):
    full = WEEKDAYS[date.weekday()]
    return full if rng.random() < 0.5 else full[:3]


def day_text(day, rng):
    return ordinal(day) if rng.random() < 0.5 else str(day)


def year_text(year, rng, apostrophe_ok=True):
    if apostrophe_ok and rng.random() < 0.15:
        return f"'{two_digit_year(year):02d}"
    return str(year)


def num(value, rng, pad_probability=0.5):
    return f"{value:02d}" if rng.random() < pad_probability else str(value)


# Each format: date, rng -> text (before case and spacing variations).
def fmt_dmy_numeric(d, rng):
    sep = rng.choice(["/", "/", "-", "."])
    year = str(d.year) if rng.random() < 0.5 else f"{two_digit_year(d.year):02d}"
    return f"{num(d.day, rng)}{sep}{num(d.month, rng)}{sep}{year}"


def fmt_ymd_numeric(d, rng):
    sep = rng.choice(["-", "-", ".", "/"])
    pad = 0.8
    return f"{d.year}{sep}{num(d.month, rng, pad)}{sep}{num(d.day, rng, pad)}"


def fmt_compact(d, rng):
    return f"{d.year}{d.month:02d}{d.day:02d}"


def fmt_day_month_year(d, rng):  # "Saturday 21 November 2026", "21st of Nov, 2026"
    with_suffix = rng.random() < 0.5
    text = f"{ordinal(d.day) if with_suffix else d.day} "
    if with_suffix and rng.random() < 0.3:
        text += "of "  # "21st of November"
    text += month_name(d.month, rng)
    text += ", " if rng.random() < 0.2 else " "
    text += year_text(d.year, rng)
    if rng.random() < 0.4:
        text = weekday_name(d, rng) + (", " if rng.random() < 0.5 else " ") + text
    elif with_suffix and rng.random() < 0.15:
        text = "the " + text  # "the 21st of November 2026"
    return text


def fmt_month_day_year(d, rng):  # "Nov 21st, 2026", "Saturday, November 21, 2026"
    text = f"{month_name(d.month, rng)} {day_text(d.day, rng)}"
    text += ", " if rng.random() < 0.7 else " "
    text += year_text(d.year, rng)
    if rng.random() < 0.4:
        text = weekday_name(d, rng) + (", " if rng.random() < 0.5 else " ") + text
    return text


def fmt_month_year_numeric_day(d, rng):  # "21-Nov-2026", "21 Nov 26"
    sep = rng.choice(["-", " ", "/"])
    year = str(d.year) if rng.random() < 0.5 else f"{two_digit_year(d.year):02d}"
    return f"{num(d.day, rng)}{sep}{month_name(d.month, rng)[:3]}{sep}{year}"


FORMATS = [
    (fmt_dmy_numeric, 3),
    (fmt_ymd_numeric, 2),
    (fmt_compact, 1),
    (fmt_day_month_year, 4),
    (fmt_month_day_year, 4),
    (fmt_month_year_numeric_day, 2),
]


def vary(text, rng):
    """Case and inner-space variations."""
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    elif r < 0.4:
        text = text.upper()
    if " " in text and rng.random() < 0.2:
        parts = text.split(" ")
        i = rng.randrange(len(parts) - 1)
        text = " ".join(parts[: i + 1]) + "  " + " ".join(parts[i + 1:])
    return text


def random_date(rng):
    return FIRST_DAY + datetime.timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days + 1))


def generate(rng):
    """(input text, "YYYY-MM-DD") for one random date in one random format."""
    d = random_date(rng)
    funcs, weights = zip(*FORMATS)
    fmt = rng.choices(funcs, weights)[0]
    return vary(fmt(d, rng), rng), d.isoformat()


def dataset(seed, count, exclude=()):
    """count distinct (input, target) pairs from the generator seeded with seed, skipping any
    input in exclude."""
    return training_utils.distinct_pairs(generate, seed, count, exclude)


# --- tensors -----------------------------------------------------------------------------------

def encode_src(texts):
    """(tokens [B, S], lengths [B]): characters then EOS (the config's src_append_eos)."""
    ids = [[SRC_INDEX.get(c, UNK) for c in t] + [EOS] for t in texts]
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), PAD, dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, : len(x)] = torch.tensor(x)
    return tokens, torch.tensor([len(x) for x in ids])


def encode_tgt(targets):
    """(decoder input [B, T] = BOS + target, gold [B, T] = target + EOS)."""
    ids = [[TGT_INDEX[c] for c in t] for t in targets]
    width = max(len(x) for x in ids) + 1
    tgt_in = torch.full((len(ids), width), PAD, dtype=torch.long)
    gold = torch.full((len(ids), width), PAD, dtype=torch.long)
    for i, x in enumerate(ids):
        tgt_in[i, : len(x) + 1] = torch.tensor([BOS] + x)
        gold[i, : len(x) + 1] = torch.tensor(x + [EOS])
    return tgt_in, gold


def decode_tokens(tokens, length):
    out = []
    for t in tokens[:length].tolist():
        if t == EOS:
            break
        out.append(TGT_VOCAB[t] if t >= len(SPECIALS) else "?")
    return "".join(out)


def evaluate(model, pairs, batch=500):
    """Greedy exact-match accuracy and the list of (input, expected, got) mistakes."""
    model.eval()
    wrong = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i: i + batch]
        src, lengths = encode_src([p[0] for p in chunk])
        result = model.greedy_decode(src, lengths, MAX_DECODE)
        for j, (text, expected) in enumerate(chunk):
            got = decode_tokens(result.tokens[j], int(result.lengths[j]))
            if got != expected:
                wrong.append((text, expected, got))
    return 1.0 - len(wrong) / len(pairs), wrong


def build_model(args):
    return vm.BahdanauSeq2Seq(len(SRC_VOCAB), len(TGT_VOCAB), embedding_dim=args.embedding,
                              encoder_hidden=args.encoder_hidden,
                              decoder_hidden=args.decoder_hidden,
                              attention_dim=args.attention_dim, cell="gru", pad_id=PAD,
                              bos_id=BOS, eos_id=EOS, unk_id=UNK, max_decode_length=MAX_DECODE)


def train(args):
    torch.manual_seed(args.seed)
    train_pairs = dataset(args.seed, args.train_size)
    train_inputs = {p[0] for p in train_pairs}
    valid_pairs = dataset(args.seed + 1000, 1000, exclude=train_inputs)
    heldout = dataset(args.heldout_seed, args.heldout_size,
                      exclude=train_inputs | {p[0] for p in valid_pairs})
    model = build_model(args)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params} parameters; train {len(train_pairs)}, valid {len(valid_pairs)}, "
          f"held-out {len(heldout)}; {torch.get_num_threads()} threads", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.1)
    rng = random.Random(args.seed)
    start = time.time()
    step = 0
    order = []
    loss_avg = None
    while step < args.steps:
        if len(order) < args.batch:
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
        idx, order = order[: args.batch], order[args.batch:]
        batch = [train_pairs[i] for i in idx]
        src, lengths = encode_src([p[0] for p in batch])
        tgt_in, gold = encode_tgt([p[1] for p in batch])
        model.train()
        logits, _ = model(src, lengths, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1),
                               ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.steps:
            acc, _ = evaluate(model, valid_pairs)
            print(f"step {step:5d}  loss {loss_avg:.4f}  valid exact {acc * 100:.2f}%  "
                  f"{time.time() - start:6.1f} s", flush=True)
        if args.max_minutes and time.time() - start > args.max_minutes * 60:
            print(f"time budget of {args.max_minutes} min reached at step {step}")
            break
    train_seconds = time.time() - start
    acc, wrong = evaluate(model, heldout)
    print(f"training time {train_seconds:.1f} s ({step} steps, batch {args.batch}, "
          f"{torch.get_num_threads()} threads)")
    print(f"held-out exact match (greedy): {acc * 100:.2f}% of {len(heldout)} "
          f"({len(wrong)} wrong)")
    for text, expected, got in wrong[:20]:
        print(f"  {text!r}: expected {expected}, got {got}")

    model_dir = os.path.join(args.out, "model")
    export_torch.export(model, model_dir, src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB,
                        tokenizer={"type": "char", "lowercase": False, "src_append_eos": True},
                        extra={"task": "date normalisation to YYYY-MM-DD",
                               "trained_steps": str(step), "heldout_exact_match": f"{acc:.4f}"})
    training_utils.write_tab_pairs(os.path.join(args.out, "heldout.txt"), heldout)
    reloaded = evaluate_dir(args.out)
    print(f"exported to {model_dir}; reloaded model on heldout.txt: {reloaded * 100:.2f}%")
    return acc


def read_heldout(path):
    return training_utils.read_tab_pairs(path)


def evaluate_dir(sample_dir):
    model, _ = export_torch.load_model(os.path.join(sample_dir, "model"))
    acc, _ = evaluate(model, read_heldout(os.path.join(sample_dir, "heldout.txt")))
    return acc


def main(argv=None):
    ap = training_utils.sample_parser("Train the date-normalisation sample model.", "dates")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--embedding", type=int, default=32)
    ap.add_argument("--encoder-hidden", type=int, default=64)
    ap.add_argument("--decoder-hidden", type=int, default=128)
    ap.add_argument("--attention-dim", type=int, default=64)
    ap.add_argument("--train-size", type=int, default=100000)
    ap.add_argument("--heldout-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--heldout-seed", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--max-minutes", type=float, default=14.0,
                    help="stop training after this long (0: no limit)")
    ap.add_argument("--evaluate", metavar="SAMPLE_DIR",
                    help="only evaluate SAMPLE_DIR/model on SAMPLE_DIR/heldout.txt")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.evaluate:
        acc = evaluate_dir(args.evaluate)
        print(f"held-out exact match (greedy): {acc * 100:.2f}%")
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
