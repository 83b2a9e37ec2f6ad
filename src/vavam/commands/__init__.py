"""Command functions of the ``vavam`` CLI that glue models to files: ``generate`` (VaViM) and ``plan`` (VaVAM).

Models do no file I/O; these modules load checkpoints and tokenizers, read frames or token stores,
run the models and write their outputs atomically. Each command is a plain function (tyro builds its
arguments; the first docstring line is the command's summary). Import the submodules directly
(``vavam.commands.generate:generate``, ``vavam.commands.plan:plan``); this package imports nothing.
"""
