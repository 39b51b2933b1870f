"""Subcommands of the m2f-edge CLI, one module each.

A command module exposes:
    add_parser(subparsers) -> argparse.ArgumentParser   # subparsers.add_parser("<name>", ...)
    run(args) -> int                                    # exit status
m2f_edge.cli lists the command names in COMMANDS and imports each module when the CLI starts; a module
that is missing is shown as "not available in this build".
"""
