#!/usr/bin/python3
"""Trains the sentiment sample: an RNN + attention-pooling classifier (bi-LSTM, tanh pooling
score, softmax over negative / positive) on generated English review sentences, and exports it
to samples/sentiment/model/ with samples/sentiment/heldout.txt (text<TAB>label lines).

The sentences come from templates written here (no downloaded data): a subject, a verb or
copula, optional intensifiers, optional negation ("not", "never", "didn't"), a polar word, and
sometimes a second clause after "but", which then decides the label ("the food was good but the
service was awful" is negative). label_of() states the rule.

    train_sentiment.py                  # ~1 minute on 2 threads; export to samples/sentiment/
    train_sentiment.py --out /tmp/s --threads 1
"""

import os
import random
import sys
import time

# libgomp's threads spin while waiting by default; on a shared 2-core machine (other jobs
# compiling) that made 2-thread training ~25x slower than 1 thread. Passive waiting fixes it.
# Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torch  # noqa: E402
import training_utils  # noqa: E402
import vkrnn_models as vm  # noqa: E402

SUBJECTS = ["the movie", "the film", "the food", "the service", "the hotel", "the book",
            "the staff", "this phone", "the plot", "the acting", "the music", "the room",
            "the game", "the show", "the coffee", "the app", "the trip", "the concert",
            "the waiter", "the ending"]
COPULAS = ["was", "is", "seemed", "felt", "looked", "sounded"]
INTENSIFIERS = ["", "", "really", "very", "quite", "so", "extremely", "truly", "pretty",
                "absolutely", "rather"]
POSITIVE = ["good", "great", "excellent", "wonderful", "amazing", "fantastic", "lovely",
            "brilliant", "delightful", "superb", "enjoyable", "pleasant", "perfect", "fun",
            "nice", "charming", "friendly", "impressive"]
NEGATIVE = ["bad", "terrible", "awful", "horrible", "boring", "poor", "dreadful",
            "disappointing", "mediocre", "bland", "annoying", "dull", "rude", "ugly",
            "useless", "slow", "noisy", "painful"]
POSITIVE_VERBS = ["loved", "liked", "enjoyed", "adored", "recommend", "appreciated"]
NEGATIVE_VERBS = ["hated", "disliked", "regret", "despised", "loathed"]
PERSONS = ["i", "we", "my friends", "everyone", "my wife", "my kids"]
OPENERS = ["", "", "", "honestly", "overall", "to be honest", "well", "sadly", "frankly",
           "in the end"]
NEGATIONS_COPULA = ["not", "never"]  # "was not", "was never"
NEGATIONS_VERB = ["did not", "didn't", "never"]  # "i did not like ..."
VERB_BASE = {"loved": "love", "liked": "like", "enjoyed": "enjoy", "adored": "adore",
             "recommend": "recommend", "appreciated": "appreciate", "hated": "hate",
             "disliked": "dislike", "regret": "regret", "despised": "despise",
             "loathed": "loathe"}

SPECIALS = ["<pad>", "<unk>"]
PAD, UNK = 0, 1
LABELS = ["negative", "positive"]


def lexicon():
    words = set()
    for group in (SUBJECTS, COPULAS, INTENSIFIERS, POSITIVE, NEGATIVE, POSITIVE_VERBS,
                  NEGATIVE_VERBS, PERSONS, OPENERS, NEGATIONS_COPULA, NEGATIONS_VERB,
                  list(VERB_BASE.values()), ["but", "it", "and"]):
        for phrase in group:
            words.update(phrase.split())
    return SPECIALS + sorted(words)


VOCAB = lexicon()


def clause(rng):
    """(text, polarity 0/1) of one clause."""
    negated = rng.random() < 0.3
    if rng.random() < 0.65:  # "<subject> <copula> [not] [intensifier] <adjective>"
        positive = rng.random() < 0.5
        adj = rng.choice(POSITIVE if positive else NEGATIVE)
        words = [rng.choice(SUBJECTS), rng.choice(COPULAS)]
        if negated:
            words.append(rng.choice(NEGATIONS_COPULA))
        words += [rng.choice(INTENSIFIERS), adj]
    else:  # "<person> [did not] <verb> <subject>"
        positive = rng.random() < 0.5
        verb = rng.choice(POSITIVE_VERBS if positive else NEGATIVE_VERBS)
        words = [rng.choice(PERSONS)]
        if negated:
            words += [rng.choice(NEGATIONS_VERB), VERB_BASE[verb]]
        else:
            words += [rng.choice(["", "really", "truly", "so", "absolutely"]), verb]
        words.append(rng.choice(SUBJECTS))
    text = " ".join(w for w in words if w)
    return text, int(positive != negated)


def generate(rng):
    """(sentence, label) with label 1 = positive, 0 = negative."""
    text, label = clause(rng)
    if rng.random() < 0.3:
        second, label = clause(rng)
        text = f"{text} but {second}"
    opener = rng.choice(OPENERS)
    return (f"{opener} {text}" if opener else text), label


def label_of(text):
    """The labelling rule, read off the text: the last clause (after "but") decides; a polar
    word counts positive or negative, flipped by a negation in that clause."""
    last = text.split(" but ")[-1].split()
    positive_words = set(POSITIVE) | set(POSITIVE_VERBS) | \
        {VERB_BASE[v] for v in POSITIVE_VERBS}
    negative_words = set(NEGATIVE) | set(NEGATIVE_VERBS) | \
        {VERB_BASE[v] for v in NEGATIVE_VERBS}
    polarity = None
    for w in last:
        if w in positive_words:
            polarity = 1
        elif w in negative_words:
            polarity = 0
    if polarity is None:
        raise ValueError(f"no polar word in {text!r}")
    negated = any(w in ("not", "never", "didn't") for w in last)
    return polarity ^ int(negated)


def dataset(seed, count, exclude=()):
    return training_utils.distinct_pairs(generate, seed, count, exclude)


def encode(texts, vocab):
    index = {w: i for i, w in enumerate(vocab)}
    ids = [[index.get(w, UNK) for w in t.lower().split()] for t in texts]
    width = max(len(x) for x in ids)
    tokens = torch.full((len(ids), width), PAD, dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, : len(x)] = torch.tensor(x)
    return tokens, torch.tensor([len(x) for x in ids])


def evaluate(model, vocab, pairs):
    model.eval()
    tokens, lengths = encode([p[0] for p in pairs], vocab)
    with torch.no_grad():
        pred = model(tokens, lengths).probs.argmax(-1)
    gold = torch.tensor([p[1] for p in pairs])
    return float((pred == gold).float().mean())


def read_heldout(path):
    return training_utils.read_tab_pairs(path, LABELS.index)


def main(argv=None):
    ap = training_utils.sample_parser("Train the sentiment sample model.", "sentiment")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--heldout-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train_pairs = dataset(args.seed, args.train_size)
    heldout = dataset(args.seed + 1, args.heldout_size, exclude={p[0] for p in train_pairs})
    model = vm.RnnAttentionClassifier(len(VOCAB), num_classes=2, embedding_dim=32, hidden=32,
                                      layers=1, bidirectional=True, cell="lstm",
                                      pooling_score="tanh", attention_dim=32,
                                      output_activation="softmax", pad_id=PAD, unk_id=UNK)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = random.Random(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = list(range(len(train_pairs)))
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), 64):
            batch = [train_pairs[j] for j in order[i: i + 64]]
            tokens, lengths = encode([p[0] for p in batch], VOCAB)
            labels = torch.tensor([p[1] for p in batch])
            loss = model.loss(model(tokens, lengths).logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: loss {total / len(train_pairs):.4f}  "
              f"train acc {evaluate(model, VOCAB, train_pairs[:1000]) * 100:.1f}%  "
              f"{time.time() - start:.1f} s", flush=True)
    seconds = time.time() - start
    acc = evaluate(model, VOCAB, heldout)
    print(f"training time {seconds:.1f} s ({torch.get_num_threads()} threads)")
    print(f"held-out accuracy: {acc * 100:.2f}% of {len(heldout)}")

    model_dir = os.path.join(args.out, "model")
    export_torch.export(model, model_dir, vocab=VOCAB, labels=LABELS,
                        tokenizer={"type": "word", "lowercase": True, "src_append_eos": False},
                        extra={"task": "sentiment of short review sentences",
                               "heldout_accuracy": f"{acc:.4f}"})
    training_utils.write_tab_pairs(os.path.join(args.out, "heldout.txt"), heldout,
                                   lambda label: LABELS[label])
    reloaded, config = export_torch.load_model(model_dir)
    reloaded_acc = evaluate(reloaded, config["vocab"],
                            read_heldout(os.path.join(args.out, "heldout.txt")))
    print(f"exported to {model_dir}; reloaded model on heldout.txt: {reloaded_acc * 100:.2f}%")
    for text in ("the food was good but the service was awful", "i did not like the movie",
                 "the plot was not bad"):
        tokens, lengths = encode([text], VOCAB)
        with torch.no_grad():
            r = reloaded(tokens, lengths)
        weights = " ".join(f"{w}:{a:.2f}" for w, a in zip(text.split(), r.pooling[0].tolist()))
        print(f"  {LABELS[int(r.probs.argmax())]:8s} p={float(r.probs.max()):.3f}  {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
