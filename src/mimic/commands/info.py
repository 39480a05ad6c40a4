"""mimic info: shapes and MimIC parameter counts of a model (no weights are loaded)."""

from __future__ import annotations

from dataclasses import replace


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="idefics2-8b-base", help="a known model name, a hub id or a local path")


def _shapes(model_name: str) -> dict:
    from mimic.models.shapes import KNOWN_SHAPES

    if model_name in KNOWN_SHAPES:
        return KNOWN_SHAPES[model_name]
    import torch
    from transformers import AutoConfig

    from mimic.models.adapters import adapter_for
    from mimic.models.loading import model_class

    config = AutoConfig.from_pretrained(model_name)
    with torch.device("meta"):
        model = model_class(config)(config)
    return {"model_type": model.config.model_type, **adapter_for(model).shapes(model)}


def run(args) -> int:
    from dataclasses import fields

    from mimic.methods import METHODS
    from mimic.methods import count_parameters as method_parameters
    from mimic.methods.mimic_lora import MimicLoraConfig
    from mimic.shift import MimicConfig, count_shift_parameters

    shapes = _shapes(args.model)
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
