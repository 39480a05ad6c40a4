"""The synthetic multimodal task suite: shapes with attributes, drawn deterministically with PIL.

Every scene is ``count`` identical objects (colour, shape, size) on a coloured
background. The suite is built so that **the query alone under-determines the expected
answer and the demonstrations determine it**, as the short-answer format of VQAv2 is
learned from demonstrations by real LMMs:

- VQA questions are mostly generic ("What do you see?"); which attribute a task asks is
  only visible from its demonstrations' answers. A minority of questions name the
  attribute ("What color is the shape?") and are answerable zero-shot.
- A zero-shot query gets the model's *default* behaviour (a full phrase such as
  "two big red circles", which scores nothing under VQA exact match), exactly as
  the miniature model was pretrained to do on prompts without demonstrations.
- Captions come in several styles; the demonstrations show the style a task wants.
- The image is needed for the content: the answer is an attribute of this scene.

Named tasks (``params.yaml``: ``loader: synthetic``) pick one behaviour, e.g.
``shapes-vqa`` asks the colour, ``shapes-caption`` wants the ``photo`` style, and
``shapes-vqa-transfer`` asks the background colour, a question the miniature model never
saw in pretraining (to show transfer). Everything is a pure function of the seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLORS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 215, 40),
    "purple": (145, 60, 185),
    "orange": (245, 140, 25),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 9, "big": 15}
COUNTS = (1, 2, 3)
BACKGROUNDS = {"white": (240, 240, 240), "black": (25, 25, 25), "gray": (125, 125, 125)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
IMAGE_SIZE = 48

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
# Attributes a pretraining episode may ask; "background" is held out for transfer.
PRETRAIN_ATTRIBUTES = ("color", "shape", "count", "size")
ATTRIBUTES = (*PRETRAIN_ATTRIBUTES, "background")
# Synonyms some annotators use (VQA-style answer noise).
SYNONYMS = {
    "red": ("dark red", "crimson"),
    "green": ("dark green",),
    "blue": ("dark blue",),
    "yellow": ("gold",),
    "purple": ("violet",),
    "orange": ("amber",),
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


def sample_scene(rng: random.Random, image_size: int = IMAGE_SIZE) -> Scene:
    size = rng.choice(sorted(SIZES))
    count = rng.choice(COUNTS)
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
    return Scene(
        color=rng.choice(sorted(COLORS)),
        shape=rng.choice(SHAPES),
        size=size,
        count=count,
        background=rng.choice(sorted(BACKGROUNDS)),
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


def _plural(scene: Scene) -> str:
    return scene.shape + ("es" if scene.shape == "cross" and scene.count > 1 else "s" if scene.count > 1 else "")


def default_answer(scene: Scene) -> str:
    """What the model says when nothing tells it the format: a short noun phrase."""
    return f"{NUMBER_WORDS[scene.count]} {scene.size} {scene.color} {_plural(scene)}"


def caption(scene: Scene, style: str, variant: int = 0) -> str:
    """One caption of ``scene`` in ``style``; ``variant`` picks a paraphrase within the style."""
    n, noun = NUMBER_WORDS[scene.count], _plural(scene)
    if style == "default":
        return default_answer(scene)
    if style == "photo":
        lead = ("a photo of", "an image of", "a picture of")[variant % 3]
        where = ("on a", "against a", "over a")[(variant // 3) % 3]
        return f"{lead} {n} {scene.size} {scene.color} {noun} {where} {scene.background} background"
    if style == "there-are":
        verb = "is" if scene.count == 1 else "are"
        pron = ("it is" if scene.count == 1 else "they are") if variant % 2 == 0 else "all"
        return f"there {verb} {n} {noun} . {pron} {scene.color} and {scene.size}"
    if style == "inventory":
        return f"shape {scene.shape} , color {scene.color} , count {scene.count} , size {scene.size}"
    raise ValueError(f"unknown caption style {style!r}; valid: {CAPTION_STYLES}")


def human_answers(answer: str, rng: random.Random, n: int = 10) -> list[str]:
    """Ten VQA-style annotator answers: mostly the canonical one, a few synonyms."""
    options = SYNONYMS.get(answer, ())
    answers = [answer] * n
    for i in range(rng.choice((0, 0, 1, 2)) if options else 0):
        answers[n - 1 - i] = rng.choice(options)
    return answers


def reference_captions(scene: Scene, style: str, n: int = 5) -> list[str]:
    return [caption(scene, style, variant) for variant in range(n)]


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


def vqa_example(uid: str, scene: Scene, attribute: str, rng: random.Random, explicit_ratio: float) -> Example:
    if rng.random() < explicit_ratio:
        question = rng.choice(EXPLICIT_QUESTIONS[attribute])
    else:
        question = rng.choice(GENERIC_QUESTIONS)
    return Example(uid, scene, question, human_answers(scene.attribute(attribute), rng))


def caption_example(uid: str, scene: Scene, style: str) -> Example:
    return Example(uid, scene, "", reference_captions(scene, style))


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
    if kind == "vqa" and spec.get("attribute") not in ATTRIBUTES:
        raise ValueError(f"tasks.{name}.attribute = {spec.get('attribute')!r}; valid: {list(ATTRIBUTES)}")
    if kind == "caption" and spec.get("style") not in CAPTION_STYLES:
        raise ValueError(f"tasks.{name}.style = {spec.get('style')!r}; valid: {list(CAPTION_STYLES)}")
    if kind not in ("vqa", "caption"):
        raise ValueError(f"tasks.{name}.kind = {kind!r}; valid: ['vqa', 'caption']")
    ratio = spec.get("explicit_ratio", 0.3)
    if not 0 <= ratio <= 1:
        raise ValueError(f"tasks.{name}.explicit_ratio = {ratio}; must be in [0, 1]")
    for key in DEFAULT_SIZES:
        value = spec.get(key, DEFAULT_SIZES[key])
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"tasks.{name}.{key} = {value!r}; must be an integer >= 1")


def make_split(spec: dict, split: str, seed: int, taken: set[bytes]):
    """Rows of one split; scenes whose image already occurs in another split are redrawn."""
    import pandas as pd

    from mimic.data.schema import encode_png, image_record

    name = spec["name"]
    rng = random.Random(stream_seed(seed, f"{name}/{split}"))
    rows = []
    for i in range(spec.get(f"n_{split}", DEFAULT_SIZES[f"n_{split}"])):
        while True:
            scene = sample_scene(rng)
            png = encode_png(render(scene))
            digest = hashlib.sha256(png).digest()
            if digest not in taken:
                taken.add(digest)
                break
        uid = f"{name}-{split}-{i:05d}"
        if spec["kind"] == "vqa":
            ex = vqa_example(uid, scene, spec["attribute"], rng, spec.get("explicit_ratio", 0.3))
        else:
            ex = caption_example(uid, scene, spec["style"])
        rows.append({"id": ex.id, "image": image_record(png), "question": ex.question, "answers": ex.answers})
    return pd.DataFrame(rows)


def prepare_synthetic(spec: dict, out_dir, seed: int) -> dict:
    from pathlib import Path

    from mimic.data.schema import SPLITS, write_json, write_table

    check_spec(spec)
    out_dir = Path(out_dir)
    taken: set[bytes] = set()
    sizes = {}
    for split in SPLITS:
        df = make_split(spec, split, seed, taken)
        write_table(df, out_dir / f"{split}.parquet")
        sizes[split] = len(df)
    meta = {"task": spec["name"], "kind": spec["kind"], "source": "synthetic", "seed": seed, "sizes": sizes,
            "skipped": {split: 0 for split in SPLITS}, "spec": spec}
    write_json(out_dir / "meta.json", meta)
    return meta


def _register() -> None:
    from mimic.data.loaders.registry import register_loader

    register_loader("synthetic")(prepare_synthetic)


_register()
