"""One module per ``mimic`` subcommand; each defines ``add_arguments(parser)`` and ``run(args) -> int``."""
