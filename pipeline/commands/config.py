"""``streaminfer config show``: the worker's effective settings and where each came from."""

from __future__ import annotations

import argparse
import json
import os

from pipeline.commands import common


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="show the worker's effective settings (flags, env, defaults)")
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true")
    common.add_settings_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The worker's effective settings, one per line, secrets masked."""
    settings = common.worker_settings(args)
    values = settings.model_dump()
    if args.json:
        print(json.dumps({k: ("***" if k == "sasl_password" and v else v) for k, v in values.items()}, default=str))
        return 0
    flagged = {k.removeprefix("setting_") for k, v in vars(args).items() if k.startswith("setting_") and v is not None}
    for name, value in values.items():
        shown = "***" if name == "sasl_password" and value else ",".join(value) if isinstance(value, list) else value
        env = f"STREAMINFER_{name.upper()}"
        source = "flag" if name in flagged else "env" if env in os.environ else "default"
        print(f"{name:<26} {shown!s:<40} ({source})")
    return 0
