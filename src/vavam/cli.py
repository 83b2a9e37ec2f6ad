"""The ``vavam`` command: subcommands over plain functions (tyro builds each one's arguments).

Commands are registered as ``"module:function"`` strings and imported only when run, so
``vavam --help`` is instant and a missing optional dependency only affects its own command.
A command refusing bad input (``ValueError``, ``FileNotFoundError``, ``PermissionError``: e.g. a TorchScript
``--tokenizer`` without ``--trust-code``, or an ``--out`` it may not write) or failing to reach a server it was
pointed at (:class:`vavam.serve.errors.ServerUnreachable`) prints ``vavam <command>: error: <message>``
and exits with status 2; ``VAVAM_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Callable, Sequence, TextIO

#: command path -> "module:function". A path with a space is a nested command ("train tokenizer").
COMMANDS: dict[str, str] = {
    "quickstart": "vavam.quickstart:quickstart",
    "train tokenizer": "vavam.train.tokenizer:train_tokenizer",
    "train video": "vavam.train.video:train_video",
    "train action": "vavam.train.action:train_action",
    "world generate": "vavam.world.export:generate",
    "world scenarios": "vavam.world.evaluate:scenarios",
    "tokenize": "vavam.data.tokenize:tokenize",
    "tokenize convert": "vavam.data.tokenize:convert_npy_layout",
    "tokenize merge": "vavam.data.tokens:merge_manifests",
    "serve": "vavam.serve.server:serve",
    "eval closedloop": "vavam.eval.closedloop:eval_closedloop",
    "generate": "vavam.commands.generate:generate",
    "data prepare opendv": "vavam.data.prepare:prepare_opendv",
    "data prepare nuscenes": "vavam.data.prepare:prepare_nuscenes",
    "data prepare nuplan": "vavam.data.prepare:prepare_nuplan",
    "plan": "vavam.commands.plan:plan",
    "eval nexttoken": "vavam.eval.nexttoken:eval_nexttoken",
    "eval openloop": "vavam.eval.planning:eval_openloop",
    "eval quality": "vavam.eval.video_quality:eval_quality",
    "eval probe": "vavam.eval.probe:eval_probe",
    "eval scaling": "vavam.eval.scaling:eval_scaling",
    "report": "vavam.eval.gather:report",
    "checkpoint consolidate": "vavam.train.consolidate:consolidate",
    "plan-memory": "vavam.train.memory:plan_memory",
}


def _resolve(target: str) -> Callable:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _summary(target: str) -> str:
    """First docstring line of a command, read from its source without importing the module."""
    import ast
    import importlib.util

    module_name, func_name = target.split(":")
    try:
        spec = importlib.util.find_spec(module_name)
        if spec is None or spec.origin is None:
            return "(unavailable: module not found)"
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    except Exception as exc:  # a command whose module is missing still lists
        return f"(unavailable: {type(exc).__name__}: {exc})"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func_name:
            doc = ast.get_docstring(node) or ""
            return doc.splitlines()[0] if doc else ""
    return "(unavailable: function not found)"


def _print_help(prefix: str = "", file: TextIO | None = None) -> None:
    """The commands whose path starts with ``prefix`` (all by default), with their summaries, to ``file`` (stdout)."""
    names = sorted(c for c in COMMANDS if c.startswith(prefix))
    lines = [f"usage: vavam {prefix}<command> [--help] [options]\n", "VaViM / VaVAM: video generative models for "
             "driving.\n", "commands:"]
    width = max(len(n) for n in names)
    lines += [f"  {name.ljust(width)}  {_summary(COMMANDS[name])}" for name in names]
    lines.append("\nRun 'vavam <command> --help' for a command's options.")
    print("\n".join(lines), file=file if file is not None else sys.stdout)


def _typed_option(args: Sequence[str], flag: str) -> str | None:
    """The value typed for ``flag`` (``--flag VALUE`` or ``--flag=VALUE``; the last one wins), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _warning_format(name: str) -> Callable:
    """``warnings.formatwarning`` for command ``name``: vavam's own warnings are one line naming the command (the
    default format adds ``file:line`` and the source line of the ``warnings.warn`` call, which tells a user
    nothing); warnings of other packages keep the default format.

    A warning is vavam's when the code that called ``warnings.warn`` is in the vavam package (found on the stack:
    the reported file follows ``stacklevel`` and may be the caller's)."""
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    default = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename == warnings.__file__:  # showwarning and its helpers
            frame = frame.f_back
        if frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
            return f"vavam {name}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return format_warning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vavam`` console script."""
    import tyro

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    # Longest command path that prefixes the arguments ("tokenize convert" before "tokenize").
    for depth in range(max(len(c.split()) for c in COMMANDS), 0, -1):
        name = " ".join(args[:depth])
        if len(args) >= depth and name in COMMANDS:
            func = _resolve(COMMANDS[name])
            from vavam.io import UnsafePickleError
            from vavam.serve.errors import ServerUnreachable
            from vavam.train.resume import CheckpointError

            from vavam.train.recipes import command_line

            try:
                asks_help = any(a in ("-h", "--help") for a in args[depth:])
                if "device" in inspect.signature(func).parameters and not asks_help:  # a missing GPU: one line
                    device = _typed_option(args[depth:], "--device")
                    if device is not None:
                        from vavam.hardware import check_device

                        check_device(device)
                import warnings

                formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_format(name)
                try:
                    with command_line(args[depth:]):  # options typed win over a --recipe even at their defaults
                        result = tyro.cli(func, args=args[depth:], prog=f"vavam {name}")
                finally:
                    warnings.formatwarning = formatwarning
            except (ValueError, FileNotFoundError, PermissionError, ServerUnreachable, CheckpointError,
                    UnsafePickleError) as exc:  # bad input (a corrupt or crafted checkpoint too), named
                if os.environ.get("VAVAM_TRACEBACK"):
                    raise
                message = str(exc).removeprefix(f"vavam {name}: ")  # messages that name their command already
                print(f"vavam {name}: error: {message}\n(VAVAM_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
                return 2
            return result if isinstance(result, int) else 0
    # The longest group the arguments name ("data prepare" before "data"), then what follows it.
    depth = max((d for d in range(1, len(args) + 1)
                 if any(c.startswith(" ".join(args[:d]) + " ") for c in COMMANDS)), default=0)
    if depth:
        group, rest = " ".join(args[:depth]) + " ", args[depth:]
        asked_help = bool(rest) and rest[0] in ("-h", "--help", "help")
        if rest and not asked_help:  # "vavam train bogus": say so before the group's commands
            what = (f"'vavam {group.strip()}' needs a command before the option {rest[0]!r}" if rest[0].startswith("-")
                    else f"unknown command {group + rest[0]!r}")
            print(f"vavam: {what}\n", file=sys.stderr)
            _print_help(group, file=sys.stderr)
            return 2
        _print_help(group)
        return 0 if asked_help else 2
    print(f"vavam: unknown command {args[0]!r}\n", file=sys.stderr)
    _print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
