"""A small, learnable stand-in for GLUE MNLI and a tiny BERT to go with it, for offline demos.

`write_demo_mnli` writes the five MNLI files in GLUE's exact layout (same headers and
columns, tab-separated, no quoting). Each row pairs a templated premise with a hypothesis
whose label follows from the wording: entailments shorten, generalise or paraphrase the
premise, contradictions negate it or swap in a conflicting word, neutral hypotheses add
something the premise does not say. The templates of different labels share surface forms
("the man is tall ." can be any of the three), so the premise must be read. Matched genres
(train, dev_matched, test_matched) and mismatched genres (dev_mismatched, test_mismatched
only) use different vocabularies with the same label logic, like MNLI.

`write_tiny_bert` trains a WordPiece vocabulary and saves it with a randomly initialised
small BERT, loadable offline with `AutoTokenizer` / `BertForSequenceClassification`.

    python -m fine_tune.demo_data --data_dir demo/data --model_dir demo/tiny-bert
"""
import argparse
import collections
import heapq
import random
import string
import sys
from pathlib import Path

from fine_tune.data import COLUMNS, LABELS, SPLITS, TASK_DIRS, layout_of, read_split
from fine_tune.errors import UserError, run_cli
from fine_tune.io import atomic_write_text

DEFAULT_SIZES = {
    "train": 6000,
    "dev_matched": 600,
    "dev_mismatched": 600,
    "test_matched": 500,
    "test_mismatched": 500,
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] gets id 0

# Each genre: subjects (noun, hypernym, pronoun), adjective antonym pairs, actions
# (3rd-person verb, base form, synonym, objects, hypernym of the objects) and places.
_MATCHED_GENRES = {
    "fiction": {
        "subjects": [("man", "person", "he"), ("woman", "person", "she"),
                     ("boy", "child", "he"), ("girl", "child", "she"),
                     ("sailor", "person", "he"), ("witch", "person", "she")],
        "adjectives": [("young", "old"), ("tall", "short"), ("happy", "sad"),
                       ("quiet", "noisy")],
        "actions": [
            ("plays", "play", "practices", ["guitar", "piano", "violin", "drums", "flute"],
             "an instrument"),
            ("reads", "read", "studies", ["book", "letter", "poem", "novel", "diary"],
             "some writing"),
            ("eats", "eat", "devours", ["apple", "soup", "bread", "cake", "cook 's stew"],
             "some food"),
            ("paints", "paint", "colors", ["fence", "door", "boat", "wall", "chair"],
             "something"),
        ],
        "places": ["in the park", "in the kitchen", "on the beach", "in the garden",
                   "at the castle", "in the forest"],
    },
    "government": {
        "subjects": [("senator", "official", "she"), ("minister", "official", "he"),
                     ("clerk", "worker", "he"), ("mayor", "official", "she"),
                     ("judge", "official", "she"), ("officer", "worker", "he")],
        "adjectives": [("senior", "junior"), ("busy", "idle"), ("local", "foreign"),
                       ("cautious", "reckless")],
        "actions": [
            ("signs", "sign", "approves", ["bill", "law", "budget", "treaty", "contract"],
             "a document"),
            ("reviews", "review", "examines", ["report", "proposal", "audit", "request",
                                               "agency 's plan"], "a paper"),
            ("funds", "fund", "finances", ["program", "school", "hospital", "project",
                                           "bridge"], "something public"),
            ("announces", "announce", "declares", ["election", "reform", "policy", "tax",
                                                   "deadline"], "a decision"),
        ],
        "places": ["in the capitol", "at the office", "in the courtroom", "at the city hall",
                   "in the committee room", "at the embassy"],
    },
    "travel": {
        "subjects": [("tourist", "person", "he"), ("guide", "person", "she"),
                     ("pilot", "person", "she"), ("driver", "person", "he"),
                     ("hiker", "person", "she"), ("traveler", "person", "he")],
        "adjectives": [("tired", "rested"), ("early", "late"), ("careful", "careless"),
                       ("cheerful", "grumpy")],
        "actions": [
            ("visits", "visit", "tours", ["museum", "temple", "cathedral", "palace", "market"],
             "a landmark"),
            ("rents", "rent", "hires", ["car", "bike", "boat", "scooter", "kayak"],
             "a vehicle"),
            ("photographs", "photograph", "films", ["waterfall", "bridge", "harbor",
                                                    "mountain", "guide 's camp"], "a sight"),
            ("climbs", "climb", "ascends", ["hill", "tower", "volcano", "cliff", "staircase"],
             "something tall"),
        ],
        "places": ["in rome", "near the coast", "in the old town", "at the station",
                   "in the village", "by the lake"],
    },
}
_MISMATCHED_GENRES = {
    "letters": {
        "subjects": [("donor", "person", "she"), ("volunteer", "person", "he"),
                     ("editor", "person", "she"), ("treasurer", "person", "he"),
                     ("neighbor", "person", "she"), ("member", "person", "he")],
        "adjectives": [("generous", "stingy"), ("loyal", "fickle"), ("eager", "reluctant"),
                       ("polite", "rude")],
        "actions": [
            ("mails", "mail", "sends", ["check", "donation", "pledge", "gift", "refund"],
             "some money"),
            ("drafts", "draft", "composes", ["appeal", "newsletter", "memo", "invitation",
                                             "society 's notice"], "a message"),
            ("thanks", "thank", "praises", ["sponsor", "supporter", "trustee", "pastor",
                                            "alumni"], "somebody"),
            ("organizes", "organize", "arranges", ["auction", "banquet", "raffle",
                                                   "fundraiser", "reunion"], "an event"),
        ],
        "places": ["at the foundation", "in the auditorium", "at the clubhouse",
                   "in the chapel", "at the library", "in the lobby"],
    },
    "oup": {
        "subjects": [("weaver", "craftsperson", "she"), ("scholar", "academic", "he"),
                     ("historian", "academic", "she"), ("craftsman", "craftsperson", "he"),
                     ("merchant", "trader", "he"), ("apprentice", "craftsperson", "she")],
        "adjectives": [("skilled", "clumsy"), ("patient", "impatient"), ("wealthy", "poor"),
                       ("famous", "obscure")],
        "actions": [
            ("weaves", "weave", "knits", ["quilt", "rug", "tapestry", "blanket", "shawl"],
             "a textile"),
            ("dyes", "dye", "stains", ["wool", "linen", "cotton", "silk", "yarn"],
             "some fabric"),
            ("catalogs", "catalog", "records", ["manuscript", "artifact", "pottery", "relic",
                                                "curator 's collection"], "an item"),
            ("trades", "trade", "barters", ["spices", "porcelain", "indigo", "lumber",
                                            "copper"], "some goods"),
        ],
        "places": ["in the workshop", "at the guild", "in the archive", "in the bazaar",
                   "at the mill", "in the cloister"],
    },
}
# Shared by all genres, so the label logic carries over to the mismatched genres.
_MODIFIERS = {
    "beneficiary": ["for {poss} sister", "for {poss} brother", "for {poss} mother",
                    "for {poss} friend", "for {poss} boss"],
    "reason": ["because {pron} is bored", "because it is raining", "because {pron} was asked",
               "because it is monday"],
    "time": ["every morning", "on sunday", "before dinner", "after work", "at noon"],
    "company": ["with a friend", "with {poss} cousin", "with two colleagues"],
    "speech": ['and says "fine"', 'and says "of course"', 'and says "not today"',
               'and says "no problem"'],
}
_SYLLABLES = ["ba", "bel", "cor", "da", "dun", "el", "fa", "gar", "ha", "kel", "la", "lin",
              "ma", "mor", "pa", "ren", "sa", "tor", "va", "wen", "ber", "ka", "ri", "ton"]


def _town(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))


_IDLE = ["sleeping", "resting at home", "lying in bed", "watching television"]
_OBJECT_ADJECTIVES = ["new", "expensive", "red", "famous", "old", "broken"]
_LIKES = ["likes", "hates", "does not like", "wants"]


def _article_phrase(noun: str) -> str:
    return f"the {noun}"


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class _Scene:
    """One premise: a subject with an adjective does something to an object somewhere."""

    def __init__(self, rng: random.Random, genre: dict):
        self.rng = rng
        self.genre = genre
        self.noun, self.hypernym, self.pron = rng.choice(genre["subjects"])
        self.poss = "his" if self.pron == "he" else "her"
        pair = rng.choice(genre["adjectives"])
        self.adj, self.antonym = pair if rng.random() < 0.5 else pair[::-1]
        self.other_adjs = [a for p in genre["adjectives"] if p is not pair for a in p]
        action = rng.choice(genre["actions"])
        self.verb, self.base, self.synonym, objects, self.obj_hypernym = action
        self.obj = rng.choice(objects)
        self.other_objs = [o for o in objects if o != self.obj]
        # Some scenes happen in a named town: rare words of every genre and label, which
        # the hypothesis copies or swaps like any other place.
        self.place = f"in {_town(rng)}" if rng.random() < 0.3 else rng.choice(genre["places"])
        self.other_places = [p for p in genre["places"] if p != self.place]
        self.other_places += [t for t in (f"in {_town(rng)}" for _ in range(2)) if t != self.place]
        self.mod_kind = rng.choice(sorted(_MODIFIERS)) if rng.random() < 0.35 else None
        self.mod = self._modifier(self.mod_kind) if self.mod_kind else None

    def _modifier(self, kind: str) -> str:
        return self.rng.choice(_MODIFIERS[kind]).format(pron=self.pron, poss=self.poss)

    def _maybe_modifier(self) -> str:
        """Sometimes a modifier, which does not undo a contradiction elsewhere in the sentence."""
        return " " + self._modifier(self.rng.choice(sorted(_MODIFIERS))) if self.rng.random() < 0.4 else ""

    def premise(self) -> str:
        words = [f"the {self.adj} {self.noun} {self.verb} {_article_phrase(self.obj)} {self.place}"]
        if self.mod:
            words.append(self.mod)
        return " ".join(words) + " ."

    # Hypotheses. Each label mixes templates (weight, template) whose surface forms the
    # other labels share, so most need the premise; those that only an exact word match
    # with the premise decides ("the man is tall .") are drawn less often.
    def entailment(self) -> str:
        r, subj = self.rng, f"the {self.noun}"
        return _pick(r, [
            (1, lambda: f"{subj} {self.verb} {_article_phrase(self.obj)}"),
            (1, lambda: f"{_a(self.hypernym)} {self.verb} {self.obj_hypernym}"),
            (1, lambda: f"{_a(self.hypernym)} {self.verb} {_article_phrase(self.obj)} {self.place}"),
            (1, lambda: f"the {self.adj} {self.noun} {self.synonym} {_article_phrase(self.obj)}"),
            (1, lambda: f"{subj} is not {r.choice(_IDLE)}"),
            (1, lambda: f"{r.choice([subj, 'someone'])} is {self.place}"),
            (1, lambda: f"there is {_a(self.noun)} {self.place}"),
            (0.5, lambda: f"{subj} is {self.adj}"),
            (1, lambda: (f"{subj} {self.verb} {_article_phrase(self.obj)} {self.mod}" if self.mod
                         else f"{subj} {self.verb} something {self.place}")),
        ])

    def contradiction(self) -> str:
        r, subj = self.rng, f"the {self.noun}"
        return _pick(r, [
            (1, lambda: f"{subj} does not {self.base} {_article_phrase(self.obj)}"),
            (1, lambda: f"{subj} is not {self.place}"),
            (1, lambda: f"{subj} {self.verb} {_article_phrase(r.choice(self.other_objs))}"
                        f"{self._maybe_modifier()}"),
            (1, lambda: f"{subj} {self.verb} {_article_phrase(self.obj)} "
                        f"{r.choice(self.other_places)}{self._maybe_modifier()}"),
            (1, lambda: f"the {self.antonym} {self.noun} {self.synonym} {_article_phrase(self.obj)}"),
            (0.5, lambda: f"{subj} is {self.antonym}"),
            (1, lambda: f"{subj} is {r.choice(_IDLE)}"),
            (1, lambda: f"nobody {self.verb} {_article_phrase(self.obj)} {self.place}"),
            (1, lambda: f"there is not {_a(self.noun)} {self.place}"),
        ])

    def neutral(self) -> str:
        r, subj = self.rng, f"the {self.noun}"
        kinds = [k for k in sorted(_MODIFIERS) if k != self.mod_kind]
        return _pick(r, [
            (1, lambda: f"{subj} {self.verb} {_article_phrase(self.obj)} {self._modifier(r.choice(kinds))}"),
            (1, lambda: f"{subj} {self.verb} the {r.choice(_OBJECT_ADJECTIVES)} {self.obj}"),
            (1, lambda: f"{subj} {r.choice(_LIKES)} {_article_phrase(r.choice(self.other_objs))}"),
            (0.5, lambda: f"{subj} is {r.choice(self.other_adjs)}"),
            (0.5, lambda: f"{subj} is not {r.choice(self.other_adjs)}"),
            (1, lambda: f"{subj} will {self.base} {_article_phrase(r.choice(self.other_objs))} tomorrow"),
            (1, lambda: f"{_a(self.hypernym)} {self.verb} {_article_phrase(self.obj)} "
                        f"{self._modifier(r.choice(kinds))}"),
            (1, lambda: f"{subj} is {r.choice(self.other_places)} "
                        f"{r.choice(['later', 'every week', 'sometimes'])}"),
            (1, lambda: f"there is {_a(self.noun)} {self.place} {self._modifier(r.choice(kinds))}"),
        ])


def _pick(rng: random.Random, templates) -> str:
    weights, makers = zip(*templates)
    return rng.choices(makers, weights=weights)[0]() + " ."


def _parses(sentence: str) -> tuple[str, str]:
    """Simple bracketings in the shape of MNLI's binary_parse and parse columns."""
    tokens = sentence.split()
    binary = "( " + " ".join(tokens[:-1]) + " ) " + tokens[-1] if len(tokens) > 1 else sentence
    return f"( {binary} )", "(ROOT (S " + " ".join(f"(X {t})" for t in tokens) + "))"


def _rows(split: str, n: int, seed: int) -> list[list[str]]:
    # An independent stream per split: changing one split's size leaves the others alone.
    rng = random.Random(f"demo-mnli:{seed}:{split}")
    genres = _MISMATCHED_GENRES if split.endswith("mismatched") else _MATCHED_GENRES
    names = sorted(genres)
    layout = layout_of(split)
    prompt_ids = rng.sample(range(10000, 200000), n)
    rows = []
    for index in range(n):
        genre = rng.choice(names)
        scene = _Scene(rng, genres[genre])
        label = rng.choice(LABELS)
        premise, hypothesis = scene.premise(), getattr(scene, label)()
        p_binary, p_parse = _parses(premise)
        h_binary, h_parse = _parses(hypothesis)
        # MNLI's pairID is the promptID plus the label's initial; test files reveal nothing.
        suffix = label[0] if layout != "test" else rng.choice("cen")
        row = [str(index), str(prompt_ids[index]), f"{prompt_ids[index]}{suffix}", genre,
               p_binary, h_binary, p_parse, h_parse, premise, hypothesis]
        if layout == "train":
            row += [label, label]
        elif layout == "dev":
            # Five annotator labels whose majority is the gold label, as in MNLI's dev set.
            votes = [label] + [label if rng.random() < 0.85 else rng.choice(LABELS)
                               for _ in range(4)]
            if votes.count(label) < 3:
                votes = [label] * 3 + votes[3:]
            row += votes + [label]
        rows.append(row)
    return rows


def write_demo_mnli(data_dir, sizes=None, seed: int = 0) -> dict:
    """Write data_dir/MNLI/<split>.tsv for all five splits in GLUE's MNLI layout and
    return the number of rows written per split. Deterministic given `seed`."""
    counts = dict(DEFAULT_SIZES)
    for split, n in (sizes or {}).items():
        if split not in DEFAULT_SIZES:
            raise UserError(f"unknown split {split!r} in sizes; expected one of {', '.join(SPLITS)}")
        if int(n) < 1:
            raise UserError(f"sizes[{split!r}] must be at least 1, got {n}")
        counts[split] = int(n)
    folder = Path(data_dir) / TASK_DIRS["mnli"]
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = _rows(split, counts[split], seed)
        columns = COLUMNS[layout_of(split)]
        for row in rows:  # the format has no quoting: a tab or newline would break a row
            assert len(row) == len(columns) and not any("\t" in f or "\n" in f for f in row)
        lines = ["\t".join(columns)] + ["\t".join(row) for row in rows]
        atomic_write_text("\n".join(lines) + "\n", folder / f"{split}.tsv")
    return counts


def demo_texts(data_dir) -> list[str]:
    """The premises and hypotheses of the train split, for training a vocabulary."""
    examples = read_split(data_dir, "mnli", "train")
    return list(examples.premise) + list(examples.hypothesis)


def learn_wordpiece_vocab(texts, vocab_size: int = 2000, min_frequency: int = 2) -> list:
    """A WordPiece vocabulary for `texts`, as tokens in id order: the special tokens
    ([PAD] first), every character (and ASCII letter, digit and punctuation mark) alone
    and as a "##" continuation, then the pieces made by repeatedly merging the most
    frequent adjacent pair of pieces, as the `tokenizers` WordPiece trainer does. That
    trainer breaks ties between equally frequent pairs in hash-map order, so it gives a
    different vocabulary from run to run; here ties go to the alphabetically first pair,
    so the same texts always give the same vocabulary."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = collections.Counter(
        word for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [[word[0]] + [f"##{c}" for c in word[1:]] for word in sorted(counts)]
    freq = [counts[word] for word in sorted(counts)]
    # Letters, digits and punctuation the texts lack still get a piece, so a word of an
    # unseen genre splits into pieces instead of becoming [UNK].
    alphabet = sorted({c for word in counts for c in word}
                      | set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = list(SPECIAL_TOKENS) + alphabet + [f"##{c}" for c in alphabet]
    known = set(vocab)

    pairs = collections.Counter()          # pair -> occurrences in the texts
    where = collections.defaultdict(set)   # pair -> words that (may) contain it
    for w, pieces in enumerate(words):
        for pair in zip(pieces, pieces[1:]):
            pairs[pair] += freq[w]
            where[pair].add(w)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if -negative != pairs.get(pair, 0):
            continue  # stale entry: the pair's count changed after it was pushed
        if -negative < min_frequency:
            break
        first, second = pair
        merged = first + second[2:]
        changed = set()
        for w in sorted(where.pop(pair)):
            pieces = words[w]
            for old in zip(pieces, pieces[1:]):
                pairs[old] -= freq[w]
                changed.add(old)
            i = 0
            while i < len(pieces) - 1:
                if pieces[i] == first and pieces[i + 1] == second:
                    pieces[i:i + 2] = [merged]
                i += 1
            for new in zip(pieces, pieces[1:]):
                pairs[new] += freq[w]
                where[new].add(w)
                changed.add(new)
        del pairs[pair]
        changed.discard(pair)
        for other in changed:  # counts went down or up: push their current counts
            if pairs[other] > 0:
                heapq.heappush(heap, (-pairs[other], other))
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
    return vocab[:max(vocab_size, len(SPECIAL_TOKENS))]


def write_tiny_bert(folder, texts, hidden_size: int = 64, num_layers: int = 4,
                    num_heads: int = 2, intermediate_size: int = 128,
                    max_position_embeddings: int = 128, vocab_size: int = 2000,
                    seed: int = 0) -> Path:
    """Train a lowercase WordPiece vocabulary on `texts` and save it with a randomly
    initialised BertModel of the given shape to `folder`. Deterministic given `seed`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # vocab.txt lists tokens by id; BertTokenizer builds BERT's WordPiece pipeline on it.
    ordered = learn_wordpiece_vocab(texts, vocab_size)
    atomic_write_text("\n".join(ordered) + "\n", folder / "vocab.txt")
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(ordered)},
                              do_lower_case=True, model_max_length=max_position_embeddings)
    tokenizer.save_pretrained(folder)

    config = BertConfig(vocab_size=len(ordered), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size,
                        max_position_embeddings=max_position_embeddings, type_vocab_size=2,
                        pad_token_id=0)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    return folder


def parse_args(args=None):
    parser = argparse.ArgumentParser(
        prog="python -m fine_tune.demo_data",
        description="Write a small learnable MNLI-format data set and a tiny randomly "
                    "initialised BERT, for trying the pipeline offline.")
    parser.add_argument("--data_dir", required=True,
                        help="folder to write MNLI/<split>.tsv into (GLUE MNLI layout)")
    parser.add_argument("--model_dir", required=True,
                        help="folder to save the tiny BERT (vocabulary, tokenizer, weights) into")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed for the data and the model's initial weights")
    for split in SPLITS:
        parser.add_argument(f"--{split}_size", type=int, default=DEFAULT_SIZES[split],
                            help=f"rows in {split}.tsv (default {DEFAULT_SIZES[split]})")
    parser.add_argument("--hidden_size", type=int, default=64, help="BERT hidden width")
    parser.add_argument("--num_layers", type=int, default=4, help="BERT transformer layers")
    parser.add_argument("--num_heads", type=int, default=2, help="attention heads per layer")
    parser.add_argument("--intermediate_size", type=int, default=128,
                        help="width of each layer's feed-forward block")
    parser.add_argument("--vocab_size", type=int, default=2000,
                        help="largest WordPiece vocabulary to train (the data may need fewer)")
    return parser.parse_args(args)


def main(args=None) -> None:
    opts = parse_args(args)
    if opts.hidden_size % opts.num_heads:
        raise UserError(f"--hidden_size {opts.hidden_size} is not a multiple of "
                        f"--num_heads {opts.num_heads}")
    sizes = {split: getattr(opts, f"{split}_size") for split in SPLITS}
    counts = write_demo_mnli(opts.data_dir, sizes, seed=opts.seed)
    print("wrote " + ", ".join(f"{split} {n}" for split, n in counts.items())
          + f" rows to {Path(opts.data_dir) / TASK_DIRS['mnli']}")
    folder = write_tiny_bert(opts.model_dir, demo_texts(opts.data_dir),
                             hidden_size=opts.hidden_size, num_layers=opts.num_layers,
                             num_heads=opts.num_heads,
                             intermediate_size=opts.intermediate_size,
                             vocab_size=opts.vocab_size, seed=opts.seed)
    print(f"wrote a tiny BERT to {folder}")


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
