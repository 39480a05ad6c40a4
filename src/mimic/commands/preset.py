"""mimic preset NAME [NAME ...]: lay presets (presets/<name>.yaml) over params.yaml, checked, then written.

    mimic preset paper reference     # the paper's experiment under the reference code's protocol
    mimic preset paper --dry-run     # print what would change; write nothing
    snakemake --cores 4 all          # or: dvc repro

The merged file is checked in full (schema, cross-references, the run's data files) before it is
written; a failing check names the key and leaves params.yaml as it was. Comments are kept.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", help="presets (presets/<name>.yaml or a .yaml path), applied in order")
    parser.add_argument("--params", default="params.yaml", help="the params file to change")
    parser.add_argument("--dry-run", action="store_true", help="list the keys that would change; write nothing")
    parser.add_argument("--list", action="store_true", help="list the shipped presets")


def run(args) -> int:
    from mimic.pipeline.params import ParamsError
    from mimic.pipeline.presets import apply_presets, available, preset_file

    if args.list or not args.names:
        for name in available(args.params):
            first = preset_file(name, args.params).read_text().splitlines()[:1]
            print(f"{name:12s} {first[0].lstrip('# ') if first else ''}")
        if not args.names and not args.list:
            raise ParamsError("name at least one preset (the list above), e.g. `mimic preset paper`")
        return 0
    changed = apply_presets(args.names, args.params, write=not args.dry_run)
    verb = "would change" if args.dry_run else "changed"
    print(f"{args.params}: {len(changed)} key(s) {verb} by preset(s) {', '.join(args.names)}")
    for key in changed:
        print(f"  {key}")
    return 0
