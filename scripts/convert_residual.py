#!/usr/bin/env python3
"""Convert the authors' Cones 2 residuals (*.pt) to this pack's .safetensors format.

    python scripts/convert_residual.py dog.pt --subject dog [-o out.safetensors] [--force]

--subject records the class phrase the residual binds to when Load Residual's phrase is
empty. Without it the file records none (the authors' files are all called residual.pt, so
the name says nothing) and Load Residual asks for the phrase. Loading uses
torch.load(weights_only=True): a .pt file that holds code is refused.
"""

import argparse
import sys
from pathlib import Path

if __package__:  # imported as cones2.scripts.convert_residual
    from .pack_alias import import_pack_core
else:  # run as a file: Python put scripts/ first on sys.path
    from pack_alias import import_pack_core

import_pack_core()
from cones2.training.residual_file import ResidualFileError, convert_to_safetensors  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", type=Path, help="residual .pt files")
    parser.add_argument("--subject", help="the class phrase the residual binds to, e.g. 'dog' or 'robot toy' "
                                          "(default: none recorded; Load Residual then needs its phrase)")
    parser.add_argument("-o", "--output", type=Path, help="output file (one source only)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    if args.output and len(args.sources) > 1:
        parser.error("--output takes one source file")
    status = 0
    for src in args.sources:
        try:
            out = convert_to_safetensors(src, args.output, subject=args.subject, overwrite=args.force)
            print(f"{src} -> {out}")
            if not args.subject:
                print(f"note: {out.name} records no subject: type its phrase in Load Residual, or convert "
                      "again with --subject PHRASE --force", file=sys.stderr)
        except FileExistsError as e:
            print(f"error: {e.filename} exists; pass --force to overwrite it", file=sys.stderr)
            status = 1
        except ResidualFileError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
