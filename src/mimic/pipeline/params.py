"""params.yaml: loading, validation and the few questions every stage asks of it.

``load_params(path)`` checks the file against ``workflow/schemas/params.schema.yaml`` (types,
enums, ranges, required and unknown keys) and then the cross-references a schema cannot
express (names in ``run`` exist, each run method sits in the right list, ICL shots fit the
sampled demonstrations, a model has a path or a hub id, ...). Every problem is a
:class:`ParamsError` whose message is one line naming the key, e.g.::

    params.yaml: methods.mimic.train.lr = -1: must be > 0
    params.yaml: run.tasks[1] = 'vqa2': unknown task; known: shapes-vqa, shapes-caption, ...

The Snakefile (workflow/rules/common.smk) and every ``mimic`` stage call :func:`load_params`,
so a bad file fails before any job runs; :func:`check_params` checks an already parsed dict.

Methods come in two families: ``TRAINED_TYPES`` have a ``mimic train`` stage and a checkpoint
(trained by gradient, or fitted: ``FITTED_TYPES``), ``UNTRAINED_TYPES`` do not. Every such fact
is read from :mod:`mimic.methods.catalog` (torch-free), the one place that lists method types.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from mimic.errors import MimicError
from mimic.methods.catalog import types

SCHEMA_RELPATH = Path("workflow") / "schemas" / "params.schema.yaml"
UNTRAINED_TYPES = types(trained=False)
TRAINED_TYPES = types(trained=True)
FITTED_TYPES = types(fitted=True)  # fitted from forward passes: a `fit:` section, no `train:`
DEMONSTRATION_FREE_TYPES = types(trained=True, uses_demonstrations=False)  # learn from the answers alone: 0 shots
MODEL_LR_TYPES = types(takes_model_lr=True)  # types that take models.<name>.train.lr (the paper's MimIC lr)
ICL_REFERENCE = "icl"  # the method every other method is compared to (the ICL teacher)
MIMIC_REFERENCE = "mimic"  # the MimIC entry its ablations (other entries of type mimic) are compared to

# Optional `train:` settings and their defaults (the paper's / reference code's choices).
TRAIN_DEFAULTS = {
    "max_grad_norm": 1.0,  # clip the global gradient norm before each step (None: no clipping)
    "decay_bias": False,  # weight decay on biases too (the reference code exempts them)
    "ce_tokens": "answer",  # CE on the answer tokens; "prompt": every token after BOS (the reference code)
    "ce_mean": "tokens",  # a CE's mean over all labelled tokens; "answers": each answer's mean, then their mean (STAVE)
}

# Task keys that change how predictions are scored, not the data: evaluation settings, not prepare's.
EVALUATION_TASK_KEYS = ("stem",)

# Stages whose log and benchmark files join the names with "-" (mimic.pipeline.paths.log_file).
_JOINED_STAGES = {"extract-teacher": ("models", "tasks"), "evaluate": ("models", "tasks", "methods")}


class ParamsError(MimicError, ValueError):
    """A problem in params.yaml; the message is one line that names the key."""


# -- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read, validate and cross-check a params file; returns the parsed dict. The files the run's
    tasks read from disk must exist (:func:`check_data_files`)."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{name}: no such file") from None
    params = check_params(parse_yaml(text, name), source=name, schema_file=schema_path(path))
    check_data_files(params, name, path.resolve().parent)
    return params


def parse_yaml(text: str, name: str) -> Any:
    """YAML ``text`` (safe, duplicate keys refused); a syntax error is one line naming the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(f"{name}:{where}: {' '.join(str(problem).split())}") from None


def check_params(params: Any, source: str = "params.yaml", schema_file: str | Path | None = None) -> dict:
    """Validate an already parsed params dict (finite numbers, schema, cross-references); returns it."""
    _check_finite(params, source)
    _check_schema(params, source, Path(schema_file) if schema_file else schema_path())
    _check_references(params, source)
    return params


def _check_finite(node: Any, source: str, where: tuple = ()) -> None:
    """No .inf / .nan anywhere: JSON schema bounds let them through (nan > 0 is False, so is nan <= 0)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, source, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, source, (*where, i))
    elif isinstance(node, float) and not math.isfinite(node):
        spelled = ".nan" if math.isnan(node) else (".inf" if node > 0 else "-.inf")
        raise ParamsError(f"{source}: {_key_path(where)} = {spelled}: must be a finite number")


# -- the schema ----------------------------------------------------------------------------


def schema_path(params_path: str | Path | None = None) -> Path:
    """The params schema: in the checkout this package lives in, else next to ``params_path``."""
    candidates = [Path(__file__).resolve().parents[3] / SCHEMA_RELPATH]
    if params_path is not None:
        candidates.append(Path(params_path).resolve().parent / SCHEMA_RELPATH)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ParamsError(f"cannot find the params schema {SCHEMA_RELPATH}; looked at {', '.join(map(str, candidates))}")


def load_schema(path: str | Path | None = None) -> dict:
    return yaml.safe_load(Path(path or schema_path()).read_text())


def _check_schema(params: Any, source: str, schema_file: Path) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(load_schema(schema_file))
    error = best_match(validator.iter_errors(params))
    if error is not None:
        raise ParamsError(f"{source}: {_describe(error)}")


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _describe(error) -> str:
    """One line for a jsonschema error: ``key.path = value: what is wrong``."""
    where = _key_path(error.absolute_path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    in_names = "propertyNames" in error.absolute_schema_path

    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [key for key in instance if key not in allowed]
        key = unknown[0] if unknown else "?"
        scope = "unknown top-level key" if not where else "unknown key"
        if "then" in error.absolute_schema_path and isinstance(instance, dict) and "type" in instance:
            scope = f"not a key of a method of type {instance['type']}"
        return f"{_key_path([*error.absolute_path, key])}: {scope}; known: {', '.join(allowed)}"
    if kind == "required":
        missing = [key for key in expected if key not in instance]
        return f"{_key_path([*error.absolute_path, missing[0]]) if missing else where}: required key is missing"
    if in_names:
        rule = "must be letters, digits, '_' and '-' (it is used in paths, wildcards and DVC keys)"
        return f"{where}: name {_show(instance)} {rule}"

    head = f"{where} = {_show(instance)}" if where else f"(top level) = {_show(instance)}"
    if kind == "enum":
        return f"{head}: must be one of {', '.join(map(str, expected))}"
    if kind == "const":
        return f"{head}: must be {_show(expected)}"
    if kind == "type":
        names = [expected] if isinstance(expected, str) else list(expected)
        text = f"{head}: must be {' or '.join(_TYPE_NAMES.get(n, n) for n in names)}"
        if isinstance(instance, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", instance):
            fixed = re.sub(r"^([+-]?\d+)([eE])", r"\1.0\2", instance)
            text += f" (write {fixed}: YAML 1.1 reads {instance} as a string)"
        return text
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{head}: must be {bounds[kind]} {expected}"
    if kind == "minItems":
        return f"{head}: needs at least {expected} item{'s' if expected != 1 else ''}"
    if kind == "uniqueItems":
        dupes = sorted({str(v) for v in instance if instance.count(v) > 1})
        return f"{head}: has duplicates ({', '.join(dupes)})"
    if kind in ("minLength", "minProperties"):
        return f"{head}: must not be empty"
    return f"{head}: {error.message}"


# -- cross-references ------------------------------------------------------------------------


def _check_references(params: dict, source: str) -> None:
    def fail(message: str) -> None:
        raise ParamsError(f"{source}: {message}")

    models, tasks, methods, run = params["models"], params["tasks"], params["methods"], params["run"]
    all_types = UNTRAINED_TYPES + TRAINED_TYPES

    for name, entry in models.items():
        if not entry.get("path") and not entry.get("hub_id"):
            fail(f"models.{name}: needs a local `path` or a hub `hub_id` (both are missing or null)")

    in_run = set(run_methods(params))
    for name, entry in methods.items():
        if entry["type"] not in all_types:
            fail(f"methods.{name}.type = {_show(entry['type'])}: must be one of {', '.join(all_types)}")
        if entry["type"] == "icl" and entry.get("shots", 0) > params["icd"]["shots"] and name in in_run:
            fail(
                f"methods.{name}.shots = {entry['shots']}: must be <= icd.shots = {params['icd']['shots']} "
                "(the demonstrations sampled per query)"
            )
        train = entry.get("train")
        weights = ("align_weight", "ce_weight", "kl_weight")
        if train is not None and not any(train.get(w, 0) > 0 for w in weights):
            present = [w for w in weights if w in train]
            verb = {1: "is", 2: "are both"}.get(len(present), "are all")
            fail(f"methods.{name}.train: {' and '.join(present)} {verb} 0, so there is nothing to train")

    shots = params["icd"]["shots"]
    for task in run["tasks"]:
        pool = tasks.get(task, {}).get("n_support")
        if isinstance(pool, int) and shots > pool:
            fail(
                f"icd.shots = {shots}: more than tasks.{task}.n_support = {pool}, the demonstration pool each "
                f"query draws its {shots} demonstrations from; lower icd.shots or raise n_support"
            )

    if ICL_REFERENCE not in methods:
        fail(
            f"methods.{ICL_REFERENCE}: missing; define the reference method `{ICL_REFERENCE}: {{type: icl}}`, "
            "every other method is compared to it"
        )
    if methods[ICL_REFERENCE]["type"] != "icl":
        fail(f"methods.{ICL_REFERENCE}.type = {_show(methods[ICL_REFERENCE]['type'])}: must be icl (the reference)")

    def known(section: dict) -> str:
        return ", ".join(section)

    for i, name in enumerate(run["models"]):
        if name not in models:
            fail(f"run.models[{i}] = {_show(name)}: unknown model; known: {known(models)}")
    for name in run["models"]:
        shots = models[name].get("shots") if name in models else None
        if shots and shots > params["icd"]["shots"]:
            fail(f"models.{name}.shots = {shots}: must be <= icd.shots = {params['icd']['shots']} "
                 "(the demonstrations sampled per query; sample as many as the run's largest teacher needs)")
    for i, name in enumerate(run["tasks"]):
        if name not in tasks:
            fail(f"run.tasks[{i}] = {_show(name)}: unknown task; known: {known(tasks)}")
    for list_name, trained in (("untrained", False), ("trained", True)):
        for i, name in enumerate(run[list_name]):
            where = f"run.{list_name}[{i}] = {_show(name)}"
            if name not in methods:
                fail(f"{where}: unknown method; known: {known(methods)}")
            if name == ICL_REFERENCE:
                fail(f"{where}: the reference method always runs; remove it from run.{list_name}")
            kind = methods[name]["type"]
            if (kind in TRAINED_TYPES) != trained:
                other = "trained" if kind in TRAINED_TYPES else "untrained"
                article = "a" if trained is False else "an"
                fail(f"{where}: {article} {other} method (type {kind}); list it under run.{other}")

    embedding = params["icd"].get("embedding")
    if embedding is None:
        if params["icd"].get("sampler") == "rices":
            fail("icd.sampler = rices: needs icd.embedding (a key of `models` or a CLIP hub id)")
        for name in run_methods(params):
            if methods.get(name, {}).get("demos") == "rices":
                fail(f"methods.{name}.demos = rices: needs icd.embedding (a key of `models` or a CLIP hub id)")

    if params["icd"].get("sampler") == "reference":
        for name in run["trained"]:
            for model in run["models"]:  # the epochs each model trains it (models.<model>.train overrides)
                epochs = method_hp(params, name, model).get("epochs", 0)
                if epochs > params["icd"]["draws"]:
                    own = "epochs" in (params["models"][model].get("train") or {})
                    where = f"models.{model}.train.epochs" if own else f"methods.{name}.train.epochs"
                    fail(f"icd.draws = {params['icd']['draws']}: the reference sampler draws fresh demonstrations "
                         f"every epoch, so it needs draws >= {where} = {epochs} ({name})")

    for stage, sections in _JOINED_STAGES.items():
        lists = [run_methods(params) if s == "methods" else run[s] for s in sections]
        seen: dict[str, tuple] = {}
        for combo in itertools.product(*lists):
            joined = "-".join(combo)
            if joined in seen and seen[joined] != combo:
                fail(
                    f"run: {' x '.join(seen[joined])} and {' x '.join(combo)} share the log file "
                    f"results/logs/{stage}/seed-<s>/{joined}.log; rename one of them"
                )
            seen[joined] = combo


# -- the data files of the run -----------------------------------------------------------------

# Where each file of a real task comes from (docs/gpu.md, "Data", has where it goes and its size).
DOWNLOADS = {
    "vqav2": "https://visualqa.org/download.html (v2 questions and annotations) and https://cocodataset.org "
             "(train2014 / val2014 images)",
    "okvqa": "https://okvqa.allenai.org/download.html (questions and annotations) and https://cocodataset.org "
             "(images)",
    "vizwiz": "https://vizwiz.org/tasks-and-datasets/vqa/ (Annotations/train.json, Annotations/val.json and the "
              "train / val images)",
    "mme": "https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation "
           "(MME_Benchmark_release_version, by request) or the hub parquet lmms-lab/MME",
    "seed-bench": "https://huggingface.co/datasets/AILab-CVC/SEED-Bench (SEED-Bench.json and SEED-Bench-image.zip) "
                  "or the hub parquet lmms-lab/SEED-Bench",
    "coco-karpathy": "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip "
                     "(dataset_coco.json) and https://cocodataset.org (train2014 / val2014 images)",
    "flickr30k": "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip "
                 "(dataset_flickr30k.json) and https://shannon.cs.illinois.edu/DenotationGraph/ (images)",
}


def check_run_tools(params: dict) -> None:
    """Every program and package outside Python's own that scoring the run's tasks needs is installed (Java for
    caption metrics, the OK-VQA stemmer for ``stem``), else one line naming it (mimic.metrics.check_scoring_tools).
    ``mimic validate`` and the Snakefile call it before any job starts."""
    for task in params["run"]["tasks"]:
        check_task_tools(params, task)


def check_task_tools(params: dict, task: str) -> None:
    """What scoring ``task`` needs outside Python is installed (mimic.metrics.check_scoring_tools); one line if not."""
    from mimic.metrics import check_scoring_tools

    check_scoring_tools(params["tasks"][task]["kind"], bool(params["tasks"][task].get("stem")))


def check_data_files(params: dict, source: str, root: str | Path = ".") -> None:
    """Every file and folder a task of the run reads from disk (``tasks.<t>.files``, where its
    ``source`` uses files) exists; else one line naming the key, the path and where to download it."""
    root = Path(root)
    for task in params["run"]["tasks"]:
        entry = params["tasks"][task]
        sources = entry.get("source", "files")
        uses_files = "files" in (sources.values() if isinstance(sources, dict) else [sources])
        if not uses_files:
            continue
        for key, value in (entry.get("files") or {}).items():
            if value is None:
                continue
            path = Path(value) if Path(value).is_absolute() else root / value
            if not path.exists():
                loader = entry.get("loader", task)
                hint = DOWNLOADS.get(loader, "the dataset's official site")
                raise ParamsError(f"{source}: tasks.{task}.files.{key} = {value!r}: no such file or folder; "
                                  f"download it from {hint} (docs/gpu.md, Data) or point the key at your copy")


# -- questions every stage asks -------------------------------------------------------------


def data_spec(params: dict, task: str) -> dict:
    """What the data of ``task`` is made from: its entry less the keys that only change its scoring
    (:data:`EVALUATION_TASK_KEYS`): `mimic prepare`'s loader spec and the settings of the data stages."""
    return {k: v for k, v in params["tasks"][task].items() if k not in EVALUATION_TASK_KEYS}


def method_type(params: dict, method: str) -> str:
    try:
        return params["methods"][method]["type"]
    except KeyError:
        raise ParamsError(f"methods.{method}: unknown method; known: {', '.join(params['methods'])}") from None


def is_trained(params: dict, method: str) -> bool:
    """Whether ``method`` has a ``mimic train`` stage (its type is in :data:`TRAINED_TYPES`)."""
    return method_type(params, method) in TRAINED_TYPES


def trained_methods(params: dict) -> list[str]:
    """Every defined method of a trained type, in file order (run or not)."""
    return [name for name, entry in params["methods"].items() if entry["type"] in TRAINED_TYPES]


def run_seeds(params: dict) -> list[int]:
    """The run's seeds (``run.seeds``): each is one replicate of the whole run (:func:`seeded`)."""
    return list(params["run"]["seeds"])


def seeded(params: dict, seed: int) -> dict:
    """``params`` for the run seed ``seed``: data (``seed``), demonstrations (``icd.seed``) and every
    trained or fitted method (``methods.*.train.seed`` / ``fit.seed``, ``models.*.train.seed``) move
    together, each by ``seed`` from its value in params.yaml. Seed 0 is params.yaml as written."""
    out = copy.deepcopy(params)
    if not seed:
        return out
    out["seed"] += seed
    out["icd"]["seed"] += seed
    for entry in [*out["methods"].values(), *out["models"].values()]:
        for section in ("train", "fit"):
            if isinstance(entry.get(section), dict) and "seed" in entry[section]:
                entry[section]["seed"] += seed
    return out


def run_methods(params: dict) -> list[str]:
    """The methods the run evaluates, in table order: untrained, the ``icl`` reference, trained."""
    return [*params["run"]["untrained"], ICL_REFERENCE, *params["run"]["trained"]]


def method_hp(params: dict, method: str, model: str | None = None) -> dict:
    """A fitted method's ``fit:`` settings, or a trained one's ``train:`` settings with ``model``'s overrides
    (``models.<model>.train``, the paper's protocol: :func:`train_settings`). The model's ``lr`` is MimIC's
    (types in :data:`MODEL_LR_TYPES`); every other type keeps its own learning rate."""
    entry = params["methods"][method]
    if entry["type"] in FITTED_TYPES:
        return dict(entry.get("fit") or {})
    if model is None:
        return dict(entry["train"])
    hp = train_settings(params, model, method)
    if entry["type"] not in MODEL_LR_TYPES:
        hp["lr"] = entry["train"]["lr"]
    return hp


def ablation_changes(params: dict) -> dict[str, str]:
    """MimIC's ablations in the run: every trained method of type mimic but the reference ``mimic``, with
    what it changes (``insert: attn -> mlp``), the optional train settings at their defaults."""
    methods = params["methods"]
    reference = methods.get(MIMIC_REFERENCE)
    if reference is None or reference["type"] != "mimic" or MIMIC_REFERENCE not in params["run"]["trained"]:
        return {}  # no reference to compare with: every mimic entry is a method of its own
    changes = {}
    for name in params["run"]["trained"]:
        entry = methods[name]
        if name == MIMIC_REFERENCE or entry["type"] != "mimic":
            continue
        diffs = []
        for section, defaults in (("shift", {}), ("train", TRAIN_DEFAULTS)):
            a, b = {**defaults, **reference.get(section, {})}, {**defaults, **entry.get(section, {})}
            diffs += [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in sorted(set(a) | set(b))
                      if a.get(k) != b.get(k)]
        changes[name] = ", ".join(diffs) or "same as mimic"
    return changes


def method_shots(params: dict, method: str, model: str | None = None) -> int:
    """Demonstrations a method sees (icl) or mimics (trained: the teacher's); 0 for zero-shot.

    An icl method without ``shots`` (the ``icl`` reference) and every trained method use the
    ICL teacher's shots: ``models.<model>.shots`` if set (the paper's per-model protocol), else
    ``icd.shots``; methods that learn from the answers alone (:data:`DEMONSTRATION_FREE_TYPES`) 0.
    """
    kind = method_type(params, method)
    if kind == "zero-shot" or kind in DEMONSTRATION_FREE_TYPES:
        return 0
    if kind == "icl" and "shots" in params["methods"][method]:
        return int(params["methods"][method]["shots"])
    return teacher_shots(params, model)


def method_demos(params: dict, method: str) -> str:
    """Which evaluation demonstrations a method sees: ``rices`` (icd.json's ``eval_rices``) or the
    sampler's (``eval``). The ``icl`` reference follows ``icd.sampler`` (the teacher's demonstrations)."""
    entry = params["methods"][method]
    if entry.get("type") == "icl" and entry.get("demos") == "rices":
        return "rices"
    return "sampler"


# -- the per-model protocol (models.<name>: prompt, processor, shots, train, eval) --------------------


def teacher_shots(params: dict, model: str | None = None) -> int:
    """The ICL teacher's demonstrations for ``model``: ``models.<model>.shots``, else ``icd.shots``."""
    entry = params["models"].get(model, {}) if model is not None else {}
    return int(entry.get("shots") or params["icd"]["shots"])


def prompt_preset(params: dict, model: str) -> str:
    """The prompt preset of ``model`` (mimic.models.prompts.PRESETS): ``models.<model>.prompt``, default clean."""
    return params["models"][model].get("prompt") or "clean"


def processor_settings(params: dict, model: str) -> dict:
    """Keyword arguments for the model's processor (``models.<model>.processor``)."""
    return dict(params["models"][model].get("processor") or {})


def train_settings(params: dict, model: str, method: str) -> dict:
    """A trained method's ``train`` settings with the model's overrides (``models.<model>.train``) applied."""
    return {**params["methods"][method]["train"], **(params["models"][model].get("train") or {})}


def eval_settings(params: dict, model: str) -> dict:
    """``eval`` with the model's overrides (``models.<model>.eval``) applied, max_new_tokens per kind merged."""
    override = dict(params["models"][model].get("eval") or {})
    tokens = {**params["eval"]["max_new_tokens"], **override.pop("max_new_tokens", {})}
    return {**params["eval"], **override, "max_new_tokens": tokens}


def max_new_tokens(ev: dict, kind: str) -> int | None:
    """The tokens a task of ``kind`` generates under the eval settings ``ev`` (:func:`eval_settings`): its own
    ``max_new_tokens`` entry; ``yes-no`` without one takes the VQA one; ``multiple-choice`` generates nothing."""
    tokens = ev["max_new_tokens"]
    if kind == "yes-no":
        return tokens.get(kind, tokens["vqa"])
    return tokens.get(kind)


def model_source(params: dict, model: str) -> str:
    """What to load a model from: its local ``path`` if set, else its ``hub_id``."""
    try:
        entry = params["models"][model]
    except KeyError:
        raise ParamsError(f"models.{model}: unknown model; known: {', '.join(params['models'])}") from None
    source = entry.get("path") or entry.get("hub_id")
    if not source:
        raise ParamsError(f"models.{model}: needs a local `path` or a hub `hub_id`")
    return str(source)
