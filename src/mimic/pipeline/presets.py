"""Presets: named overlays of params.yaml (``presets/<name>.yaml``) for whole experiments and protocols.

A preset holds only the keys it changes. :func:`apply_presets` lays presets over a params file in
order, mapping by mapping (a preset's mapping is merged key by key into the file's; a list or a
value replaces the file's), checks the result in full (:func:`mimic.pipeline.params.check_params`,
the data files of the run's tasks included) and only then writes it, atomically, keeping the
file's comments. DVC reads params.yaml and nothing else (its templating cannot choose a file), so a
preset is selected for both tools by applying it there: ``mimic preset paper reference``, then
``snakemake --cores 4 all`` or ``dvc repro``; ``dvc params diff`` / ``git diff`` show what it set. For one
Snakemake run only, ``snakemake all --configfile presets/paper.yaml`` lays it over params.yaml the same way
(:func:`run_params_file`; such a run is not recorded in DVC).

Shipped presets (``presets/`` of the checkout): ``paper`` (the paper's experiment: Idefics-9b and
Idefics2-8b-base x VQAv2 / OK-VQA / COCO, zero-shot, ICL, RICES, MimIC and the baselines, under the
paper's protocol) and ``reference`` (every switch of the reference code's protocol, to lay over any
run: ``mimic preset paper reference``). docs/deviations.md names each switch.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import yaml

from mimic.pipeline.params import (
    ParamsError,
    check_data_files,
    check_params,
    load_params,
    parse_yaml,
    schema_path,
)

PRESETS_RELPATH = Path("presets")
RUN_PARAMS_PREFIX = ".mimic-params-"  # a run's params with command-line overrides (:func:`run_params_file`)


def presets_dir(params_path: str | Path = "params.yaml") -> Path:
    """``presets/`` beside the params file (the pipeline's root), else the one of this checkout."""
    beside = Path(params_path).resolve().parent / PRESETS_RELPATH
    return beside if beside.is_dir() else Path(__file__).resolve().parents[3] / PRESETS_RELPATH


def available(params_path: str | Path = "params.yaml") -> list[str]:
    folder = presets_dir(params_path)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_file(name: str, params_path: str | Path = "params.yaml") -> Path:
    """The file of preset ``name``: ``presets/<name>.yaml``, or ``name`` itself when it is a path to a file."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    path = presets_dir(params_path) / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"preset {name!r}: no such preset; known: {', '.join(available(params_path)) or 'none'} "
                          f"(or give the path of a .yaml file)")
    return path


def read_preset(path: Path) -> dict:
    overlay = parse_yaml(path.read_text(), str(path))
    if not isinstance(overlay, dict):
        raise ParamsError(f"{path}: a preset is a mapping of params.yaml keys, got {type(overlay).__name__}")
    return overlay


def overlay(base: Any, preset: Any) -> Any:
    """``preset`` laid over ``base`` (see :func:`merge_into`), ``base`` left as it was."""
    if isinstance(base, dict) and isinstance(preset, dict):
        return merge_into(copy.deepcopy(base), preset)
    return preset


def merge_into(target: dict, preset: dict) -> dict:
    """Lay ``preset`` over ``target`` in place: mappings merged key by key (recursively), anything else
    replaced. ``target`` may be a ruamel round-trip mapping: its comments and key order are kept."""
    for key, value in preset.items():
        if key in target and isinstance(target[key], dict) and isinstance(value, dict):
            merge_into(target[key], value)
        else:
            target[key] = value
    return target


def changed_keys(before: Any, after: Any, where: str = "") -> list[str]:
    """The dotted keys whose values differ between two params dicts (leaves; a new or removed key counts)."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys: list[str] = []
        for key in [*before, *(k for k in after if k not in before)]:
            path = f"{where}.{key}" if where else str(key)
            if key not in before or key not in after:
                keys.append(path)
            else:
                keys += changed_keys(before[key], after[key], path)
        return keys
    return [] if before == after else [where]


def round_trip_yaml():
    """ruamel.yaml in round-trip mode, set so that the shipped params.yaml reads and writes back byte for byte
    (comments, key order, ``null``, lines up to 120 characters; tests/test_presets.py checks it)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def dump_round_trip(rt, document) -> str:
    buffer = io.StringIO()
    rt.dump(document, buffer)
    return buffer.getvalue()


def apply_presets(names: list[str], params_path: str | Path = "params.yaml", write: bool = True) -> list[str]:
    """Lay the presets ``names`` over ``params_path`` in order, check the result, write it (unless
    ``write`` is false); returns the dotted keys that changed. A result that fails any check raises
    :class:`ParamsError` naming the key, and the file is left as it was."""
    from mimic.io.atomic import atomic_write_text

    params_path = Path(params_path)
    before = load_params(params_path)
    presets = [read_preset(preset_file(name, params_path)) for name in names]
    after = before
    for preset in presets:
        after = overlay(after, preset)
    source = f"{params_path} with preset(s) {', '.join(names)}"
    check_params(after, source=source, schema_file=schema_path(params_path))
    check_data_files(after, source, params_path.resolve().parent)
    changed = changed_keys(before, after)
    if write and changed:
        rt = round_trip_yaml()
        document = rt.load(params_path.read_text())
        for preset in presets:
            merge_into(document, preset)
        text = dump_round_trip(rt, document)
        if yaml.safe_load(text) != after:  # what is written is exactly what was checked
            raise ParamsError(f"{source}: the merged file does not read back as checked; nothing was written")
        atomic_write_text(params_path, text)
    return changed


def run_params_file(params: dict, source: str, root: str | Path = ".", write: bool = True) -> Path:
    """The params of a Snakemake run given overrides on its command line (``--configfile F``, ``--config k=v``:
    Snakemake lays them over params.yaml, as :func:`overlay`), checked in full like a preset, as a file the
    ``mimic`` commands read: ``.mimic-params-<sha256 of its text, 12 digits>.yaml`` beside params.yaml (so relative
    paths in it mean what they mean there). Written unless ``write`` is false (a dry run) or it is already there;
    returns its path relative to ``root``."""
    import hashlib

    from mimic.io.atomic import atomic_write_text

    root = Path(root)
    check_params(params, source=source, schema_file=schema_path(root / "params.yaml"))
    check_data_files(params, source, root.resolve())
    text = ("# params.yaml with the overrides of a snakemake command line (--configfile / --config), written by the\n"
            "# Snakefile for the mimic commands of that run; edit params.yaml or the override file, not this one.\n"
            + yaml.safe_dump(params, sort_keys=False))
    path = Path(f"{RUN_PARAMS_PREFIX}{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml")
    if write and not (root / path).is_file():
        atomic_write_text(root / path, text)
    return path
