"""The synthetic multimodal task suite: shapes with attributes, drawn deterministically with PIL.

Every scene is ``count`` identical objects (colour, shape, size) on a coloured
background. The suite is built so that **the query alone under-determines the expected
answer and the demonstrations determine it**, as real LMMs learn a task's answer format
and vocabulary from their demonstrations:

- VQA questions are mostly generic ("What do you see?"); which attribute a task asks is
  only visible from its demonstrations' answers. A minority name the attribute.
- A zero-shot query gets the model's *default* behaviour (a noun phrase such as
  "two big red circles"), as the miniature model was pretrained to answer without
  demonstrations.
- **Made-up names** (``nonce``): a task may give the values of some attributes made-up
  names, a fixed mapping drawn from the task's seed and name (red -> "dax", blue -> "tupa",
  ...). A named value is said as the value followed by its name ("red dax"). Nothing but a
  demonstration showing the same value tells the name, so a ``k``-shot prompt answers only
  the queries whose value one of its demonstrations shows: accuracy grows with ``k`` and
  with demonstrations *similar* to the query (retrieval, RICES), while a method trained on
  the task's queries can learn the whole mapping.
- **Annotation noise** (``noise``): a support record's names are those of a random other
  value with probability ``noise`` (training and evaluation answers stay clean).
- Captions come in several styles; the demonstrations show the style (and the names).

Named tasks (``params.yaml``: ``loader: synthetic``) pick one behaviour. Everything is a
pure function of the seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLORS = {
    "red": (215, 40, 40),
    "orange": (245, 140, 25),
    "yellow": (235, 215, 40),
    "green": (40, 165, 60),
    "cyan": (40, 200, 210),
    "blue": (45, 85, 225),
    "purple": (145, 60, 185),
    "pink": (240, 120, 190),
    "brown": (130, 80, 35),
    "olive": (110, 120, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 9, "big": 15}
COUNTS = (1, 2, 3)
BACKGROUNDS = {"white": (240, 240, 240), "black": (25, 25, 25), "gray": (125, 125, 125)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
IMAGE_SIZE = 48

# The values of each attribute, as the strings Scene.attribute returns.
VALUES = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "count": tuple(str(c) for c in COUNTS),
    "background": tuple(BACKGROUNDS),
}
# Made-up words: a task (or a pretraining episode) names attribute values with some of them.
NONCE_WORDS = (
    "dax", "wug", "blick", "fep", "toma", "zorp", "kiki", "lorp", "mib", "tupa",
    "gazz", "vek", "snib", "prat", "quon", "fendle", "grop", "jelk", "nuv", "pilk",
    "sarn", "tisk", "umbo", "vorn", "wez", "yorb", "zint", "blap", "crel", "drom",
    "fisp", "hoft", "jub", "klee", "mep", "nog", "plim", "roob", "teb", "vop",
)

# Questions that do not say which attribute is wanted.
GENERIC_QUESTIONS = ("What do you see?", "What is in the image?", "What is shown here?", "What is this?")
# Questions that name the attribute.
EXPLICIT_QUESTIONS = {
    "color": ("What color is the shape?", "What color are the objects?"),
    "shape": ("What shape is it?", "What shape are the objects?"),
    "count": ("How many objects are there?", "How many shapes are there?"),
    "size": ("What size is the shape?", "How big are the objects?"),
    "background": ("What color is the background?",),
}
# Attributes a pretraining episode may ask or name with made-up words; "background" is held out.
PRETRAIN_ATTRIBUTES = ("color", "shape", "count", "size")
ATTRIBUTES = (*PRETRAIN_ATTRIBUTES, "background")
# Synonyms some annotators use (VQA-style answer noise); made-up words have none.
SYNONYMS = {
    "red": ("dark red", "crimson"),
    "orange": ("amber",),
    "yellow": ("gold",),
    "green": ("dark green",),
    "cyan": ("turquoise",),
    "blue": ("dark blue",),
    "purple": ("violet",),
    "pink": ("rose",),
    "brown": ("dark brown",),
    "olive": ("khaki",),
    "circle": ("round", "circles"),
    "square": ("box", "squares"),
    "triangle": ("triangles",),
    "cross": ("plus", "crosses"),
    "small": ("tiny",),
    "big": ("large",),
    "white": ("light",),
    "black": ("dark",),
    "gray": ("grey",),
}
CAPTION_STYLES = ("default", "photo", "there-are", "inventory")
PRETRAIN_CAPTION_STYLES = CAPTION_STYLES
# Which attributes each caption style mentions (a made-up name only matters where it is mentioned).
CAPTION_ATTRIBUTES = {
    "default": ("count", "size", "color", "shape"),
    "photo": ("count", "size", "color", "shape", "background"),
    "there-are": ("count", "shape", "color", "size"),
    "inventory": ("shape", "color", "count", "size"),
}

# A lexicon names attribute values: {attribute: {value: word}}; an attribute it lacks keeps its own words.
Lexicon = dict[str, dict[str, str]]


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    size: str
    count: int
    background: str
    positions: tuple[tuple[int, int], ...]

    def attribute(self, name: str) -> str:
        if name == "count":
            return str(self.count)
        return getattr(self, name)


def sample_scene(rng: random.Random, image_size: int = IMAGE_SIZE, **fixed: str) -> Scene:
    """A random scene; ``fixed`` pins attribute values (as strings, e.g. ``color="red"``, ``count="2"``)."""
    unknown = sorted(set(fixed) - set(VALUES))
    if unknown:
        raise ValueError(f"unknown scene attribute {unknown[0]!r}; valid: {sorted(VALUES)}")
    size = rng.choice(sorted(SIZES))
    count = rng.choice(COUNTS)
    size, count = fixed.get("size", size), int(fixed.get("count", count))
    side = SIZES[size]
    positions: list[tuple[int, int]] = []
    tries = 0
    while len(positions) < count:  # non-overlapping boxes, by rejection; start over if boxed in
        tries += 1
        if tries > 50:
            positions, tries = [], 0
        x, y = rng.randint(1, image_size - side - 1), rng.randint(1, image_size - side - 1)
        if all(abs(x - px) > side + 1 or abs(y - py) > side + 1 for px, py in positions):
            positions.append((x, y))
    color, shape, background = rng.choice(sorted(COLORS)), rng.choice(SHAPES), rng.choice(sorted(BACKGROUNDS))
    return Scene(
        color=fixed.get("color", color),
        shape=fixed.get("shape", shape),
        size=size,
        count=count,
        background=fixed.get("background", background),
        positions=tuple(positions),
    )


def render(scene: Scene, image_size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    side, fill = SIZES[scene.size], COLORS[scene.color]
    for x, y in scene.positions:
        box = (x, y, x + side - 1, y + side - 1)
        if scene.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif scene.shape == "square":
            draw.rectangle(box, fill=fill)
        elif scene.shape == "triangle":
            draw.polygon([(x + side / 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=fill)
        else:  # cross
            third = side // 3
            draw.rectangle((x + third, y, x + side - 1 - third, y + side - 1), fill=fill)
            draw.rectangle((x, y + third, x + side - 1, y + side - 1 - third), fill=fill)
    return image


# ---------------------------------------------------------------------------------------------
# Made-up names


def draw_lexicon(rng: random.Random, attributes) -> Lexicon:
    """Distinct made-up words for every value of ``attributes`` (no word names two values)."""
    attributes = list(attributes)
    unknown = [a for a in attributes if a not in VALUES]
    if unknown:
        raise ValueError(f"unknown attribute {unknown[0]!r}; valid: {list(VALUES)}")
    needed = sum(len(VALUES[a]) for a in attributes)
    if needed > len(NONCE_WORDS):
        raise ValueError(f"{attributes} have {needed} values, more than the {len(NONCE_WORDS)} made-up words")
    words = iter(rng.sample(NONCE_WORDS, needed))
    return {a: {v: next(words) for v in VALUES[a]} for a in attributes}


def task_lexicon(name: str, seed: int, attributes) -> Lexicon:
    """The fixed made-up names of task ``name``: a function of (seed, name) only."""
    return draw_lexicon(random.Random(stream_seed(seed, f"{name}/lexicon")), attributes)


def name_of(scene: Scene, attribute: str, lexicon: Lexicon | None = None) -> str | None:
    """The made-up name ``lexicon`` gives ``scene``'s value of ``attribute`` (None: not renamed)."""
    return (lexicon or {}).get(attribute, {}).get(scene.attribute(attribute))


def _named(text: str, scene: Scene, attribute: str, lexicon: Lexicon | None) -> str:
    name = name_of(scene, attribute, lexicon)
    return text if name is None else f"{text} {name}"


def word(scene: Scene, attribute: str, lexicon: Lexicon | None = None) -> str:
    """How ``scene``'s value of ``attribute`` is said: the value, followed by its made-up name if it has one
    (``red`` or ``red dax``)."""
    return _named(scene.attribute(attribute), scene, attribute, lexicon)


def mislabel(lexicon: Lexicon, scene: Scene, rng: random.Random) -> Lexicon:
    """Annotation noise: the scene's made-up words become those of a random *other* value."""
    out = {}
    for attribute, names in lexicon.items():
        value = scene.attribute(attribute)
        wrong = rng.choice([v for v in VALUES[attribute] if v != value])
        out[attribute] = {**names, value: names[wrong]}
    return out


# ---------------------------------------------------------------------------------------------
# Answers and captions


def _noun(scene: Scene, lexicon: Lexicon | None) -> str:
    plural = "es" if scene.shape == "cross" else "s"
    return _named(scene.shape + (plural if scene.count > 1 else ""), scene, "shape", lexicon)


def _count(scene: Scene, lexicon: Lexicon | None) -> str:
    return _named(NUMBER_WORDS[scene.count], scene, "count", lexicon)


def default_answer(scene: Scene, lexicon: Lexicon | None = None) -> str:
    """What the model says when nothing tells it the format: a short noun phrase."""
    return f"{_count(scene, lexicon)} {word(scene, 'size', lexicon)} {word(scene, 'color', lexicon)} " \
           f"{_noun(scene, lexicon)}"


def caption(scene: Scene, style: str, variant: int = 0, lexicon: Lexicon | None = None) -> str:
    """One caption of ``scene`` in ``style``; ``variant`` picks a paraphrase, ``lexicon`` the names."""
    n, noun = _count(scene, lexicon), _noun(scene, lexicon)
    color, size = word(scene, "color", lexicon), word(scene, "size", lexicon)
    if style == "default":
        return default_answer(scene, lexicon)
    if style == "photo":
        lead = ("a photo of", "an image of", "a picture of")[variant % 3]
        where = ("on a", "against a", "over a")[(variant // 3) % 3]
        return f"{lead} {n} {size} {color} {noun} {where} {word(scene, 'background', lexicon)} background"
    if style == "there-are":
        verb = "is" if scene.count == 1 else "are"
        pron = ("it is" if scene.count == 1 else "they are") if variant % 2 == 0 else "all"
        return f"there {verb} {n} {noun} . {pron} {color} and {size}"
    if style == "inventory":
        return f"shape {noun} , color {color} , count {word(scene, 'count', lexicon)} , size {size}"
    raise ValueError(f"unknown caption style {style!r}; valid: {CAPTION_STYLES}")


def human_answers(answer: str, rng: random.Random, n: int = 10) -> list[str]:
    """Ten VQA-style annotator answers: mostly the canonical one, a few synonyms."""
    options = SYNONYMS.get(answer, ())
    answers = [answer] * n
    for i in range(rng.choice((0, 0, 1, 2)) if options else 0):
        answers[n - 1 - i] = rng.choice(options)
    return answers


def reference_captions(scene: Scene, style: str, n: int = 5, lexicon: Lexicon | None = None) -> list[str]:
    return [caption(scene, style, variant, lexicon) for variant in range(n)]


@dataclass(frozen=True)
class Example:
    """One normalized record before its image is encoded."""

    id: str
    scene: Scene
    question: str
    answers: list[str]

    @property
    def target(self) -> str:
        """The answer used for teacher forcing: the canonical first one."""
        return self.answers[0]


def vqa_example(uid: str, scene: Scene, attribute: str, rng: random.Random, explicit_ratio: float,
                lexicon: Lexicon | None = None) -> Example:
    if rng.random() < explicit_ratio:
        question = rng.choice(EXPLICIT_QUESTIONS[attribute])
    else:
        question = rng.choice(GENERIC_QUESTIONS)
    return Example(uid, scene, question, human_answers(word(scene, attribute, lexicon), rng))


def caption_example(uid: str, scene: Scene, style: str, lexicon: Lexicon | None = None) -> Example:
    return Example(uid, scene, "", reference_captions(scene, style, lexicon=lexicon))


def stream_seed(seed: int, name: str) -> int:
    """A stable sub-seed per (seed, stream name), independent of Python's hash randomisation."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# The task loader: params.yaml `tasks.<name>: {loader: synthetic, ...}` -> data/<name>/*.parquet

SPEC_KEYS = {
    "name": "task name",
    "loader": "synthetic",
    "kind": "vqa | caption",
    "attribute": f"vqa: which attribute the task asks, one of {ATTRIBUTES}",
    "style": f"caption: which caption style the task wants, one of {CAPTION_STYLES}",
    "nonce": f"attributes whose values the task names with made-up words (default none), of {ATTRIBUTES}",
    "noise": "share of support records whose made-up words are those of another value (default 0)",
    "explicit_ratio": "vqa: share of questions that name the attribute (default 0.3)",
    "n_train": "training queries",
    "n_support": "demonstration pool",
    "n_eval": "evaluation queries",
}
DEFAULT_SIZES = {"n_train": 256, "n_support": 512, "n_eval": 200}


def check_spec(spec: dict) -> None:
    """Raise a one-line ValueError naming the bad key of a synthetic task spec."""
    name = spec.get("name", "?")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"tasks.{name}.{unknown[0]}: unknown key for a synthetic task; valid: {sorted(SPEC_KEYS)}")
    kind = spec.get("kind")
    if kind not in ("vqa", "caption"):
        raise ValueError(f"tasks.{name}.kind = {kind!r}; valid: ['vqa', 'caption']")
    if kind == "vqa" and spec.get("attribute") not in ATTRIBUTES:
        raise ValueError(f"tasks.{name}.attribute = {spec.get('attribute')!r}; valid: {list(ATTRIBUTES)}")
    if kind == "caption" and spec.get("style") not in CAPTION_STYLES:
        raise ValueError(f"tasks.{name}.style = {spec.get('style')!r}; valid: {list(CAPTION_STYLES)}")
    nonce = spec.get("nonce", [])
    if not isinstance(nonce, list) or any(a not in ATTRIBUTES for a in nonce) or len(set(nonce)) < len(nonce):
        raise ValueError(f"tasks.{name}.nonce = {nonce!r}; must be a list of distinct attributes of {list(ATTRIBUTES)}")
    if sum(len(VALUES[a]) for a in nonce) > len(NONCE_WORDS):
        raise ValueError(f"tasks.{name}.nonce = {nonce!r}: more values than the {len(NONCE_WORDS)} made-up words")
    for key, default in (("explicit_ratio", 0.3), ("noise", 0.0)):
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"tasks.{name}.{key} = {value!r}; must be a number in [0, 1]")
    if spec.get("noise", 0) and not nonce:
        raise ValueError(f"tasks.{name}.noise = {spec['noise']}: noise relabels made-up words; set tasks.{name}.nonce")
    for key in DEFAULT_SIZES:
        value = spec.get(key, DEFAULT_SIZES[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"tasks.{name}.{key} = {value!r}; must be an integer >= 1")


def draw_split(spec: dict, split: str, seed: int, taken: set[bytes]) -> list[tuple[Example, bytes]]:
    """The examples of one split with their PNG bytes; a scene whose image is in ``taken`` is redrawn.

    Annotation noise (``spec["noise"]``) touches the support split only: the training and
    evaluation answers always follow the task's names.
    """
    from mimic.data.schema import encode_png

    name = spec["name"]
    lexicon = task_lexicon(name, seed, spec.get("nonce", []))
    noise = spec.get("noise", 0.0) if split == "support" else 0.0
    rng = random.Random(stream_seed(seed, f"{name}/{split}"))
    out = []
    for i in range(spec.get(f"n_{split}", DEFAULT_SIZES[f"n_{split}"])):
        while True:
            scene = sample_scene(rng)
            png = encode_png(render(scene))
            digest = hashlib.sha256(png).digest()
            if digest not in taken:
                taken.add(digest)
                break
        names = mislabel(lexicon, scene, rng) if noise and rng.random() < noise else lexicon
        uid = f"{name}-{split}-{i:05d}"
        if spec["kind"] == "vqa":
            ex = vqa_example(uid, scene, spec["attribute"], rng, spec.get("explicit_ratio", 0.3), names)
        else:
            ex = caption_example(uid, scene, spec["style"], names)
        out.append((ex, png))
    return out


def draw_task(spec: dict, seed: int) -> dict[str, list[tuple[Example, bytes]]]:
    """Every split of a task (train, support, eval; no image in two splits), with its scenes."""
    from mimic.data.schema import SPLITS

    check_spec(spec)
    taken: set[bytes] = set()
    return {split: draw_split(spec, split, seed, taken) for split in SPLITS}


def prepare_synthetic(spec: dict, out_dir, seed: int) -> dict:
    from pathlib import Path

    import pandas as pd

    from mimic.data.schema import image_record, write_json, write_table

    out_dir = Path(out_dir)
    splits = draw_task(spec, seed)
    for split, examples in splits.items():
        rows = [{"id": ex.id, "image": image_record(png), "question": ex.question, "answers": ex.answers}
                for ex, png in examples]
        write_table(pd.DataFrame(rows), out_dir / f"{split}.parquet")
    meta = {"task": spec["name"], "kind": spec["kind"], "source": "synthetic", "seed": seed,
            "sizes": {split: len(examples) for split, examples in splits.items()},
            "skipped": {split: 0 for split in splits}, "spec": spec,
            "lexicon": task_lexicon(spec["name"], seed, spec.get("nonce", []))}
    write_json(out_dir / "meta.json", meta)
    return meta


def _register() -> None:
    from mimic.data.loaders.registry import register_loader

    register_loader("synthetic")(prepare_synthetic)


_register()
