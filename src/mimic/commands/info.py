"""mimic info: shapes and MimIC parameter counts of a model (no weights are loaded).

``--model`` is a built-in shape name (``mimic.models.shapes.KNOWN_SHAPES``), a local model directory, a key of
``models`` in params.yaml (its ``path``, else its ``hub_id``: the default ``mini-idefics2`` reads
models/mini-idefics2), or a hub id; only the model's config is read.
"""

from __future__ import annotations

from dataclasses import replace


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="idefics2-8b-base",
                        help="a built-in shape name, a local model directory, a key of `models` in --params, "
                        "or a hub id")
    parser.add_argument("--params", default="params.yaml", help="where to look up --model as a key of `models`")


def model_location(model_name: str, params_file: str = "params.yaml") -> str:
    """A local directory or hub id for ``model_name``: itself when it is a directory, else the ``path`` (or
    ``hub_id``) of the params file's ``models`` entry of that name, else the name itself (a hub id)."""
    from pathlib import Path

    import yaml

    if Path(model_name).is_dir():
        return model_name
    params = Path(params_file)
    try:
        entry = (yaml.safe_load(params.read_text()) or {}).get("models", {}).get(model_name)
    except (OSError, yaml.YAMLError, AttributeError):
        entry = None
    if not isinstance(entry, dict):
        return model_name
    if entry.get("path"):  # relative to the directory the pipeline runs in: the params file's
        path = Path(entry["path"])
        return str(path if path.is_absolute() or path.is_dir() else params.parent / path)
    return str(entry.get("hub_id") or model_name)


def _shapes(model_name: str, params_file: str = "params.yaml") -> dict:
    from mimic.models.shapes import KNOWN_SHAPES

    if model_name in KNOWN_SHAPES:
        return KNOWN_SHAPES[model_name]
    import torch
    from transformers import AutoConfig

    from mimic.errors import MimicError
    from mimic.models.adapters import adapter_for
    from mimic.models.loading import model_class

    location = model_location(model_name, params_file)
    from pathlib import Path

    try:
        config = AutoConfig.from_pretrained(location, local_files_only=Path(location).is_dir())
    except (OSError, ValueError) as exc:
        known = ", ".join(sorted(KNOWN_SHAPES))
        raise MimicError(f"--model {model_name!r}: no model config found at {location!r} (not a built-in shape "
                         f"[{known}], a local directory, a key of `models` in {params_file}, or a reachable hub id: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    with torch.device("meta"):
        model = model_class(config)(config)
    return {"model_type": model.config.model_type, **adapter_for(model).shapes(model)}


def run(args) -> int:
    from dataclasses import fields

    from mimic.methods import METHODS
    from mimic.methods import count_parameters as method_parameters
    from mimic.methods.mimic_lora import MimicLoraConfig
    from mimic.shift import MimicConfig, count_shift_parameters

    shapes = _shapes(args.model, args.params)
    base = MimicConfig(
        model_type=shapes["model_type"],
        num_layers=shapes["num_layers"],
        num_heads=shapes["num_heads"],
        head_dim=shapes["head_dim"],
    )
    print(f"{args.model}: {shapes['num_layers']} layers x {shapes['num_heads']} heads x head_dim {shapes['head_dim']}")
    rows = [
        ("MimIC (default)", base),
        ("  per-layer vector", replace(base, per_head=False)),
        ("  constant magnitude", replace(base, query_dependent=False)),
    ]
    for name, cfg in rows:
        c = count_shift_parameters(cfg)
        print(f"{name:22s} v={c['v']:>9,}  magnitude(w,b)={c['magnitude']:>9,}  total={c['total']:>9,}")

    def completed(config_class):
        names = {f.name for f in fields(config_class)}
        return config_class(**{k: v for k, v in shapes.items() if k in names})

    print("every method (default config): trained + fitted")
    for kind, method in METHODS.items():
        if kind == "mimic-lora":
            config = MimicLoraConfig(base, completed(METHODS["lora"].config_class))
        else:
            config = base if kind == "mimic" else completed(method.config_class)
        c = method_parameters(config)
        print(f"  {kind:18s} trained={c['trainable']:>12,}  fitted={c['fitted']:>10,}")
    return 0
