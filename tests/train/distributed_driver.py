"""Runs vavam trainings in every process of a ``torchrun`` launch (driver of the multi-process tests).

Usage: ``python -m torch.distributed.run --nproc_per_node N tests/train/distributed_driver.py RUNS.json``
where RUNS.json is a list of ``{"kind": "video" | "action" | "tokenizer", **keyword arguments}``; the runs execute one
after the other in the same process group. Not a test module (pytest collects only ``test_*.py``).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def main(spec: str) -> None:
    from vavam.train.action import train_action
    from vavam.train.tokenizer import train_tokenizer
    from vavam.train.video import train_video

    warnings.filterwarnings("ignore")
    for run in json.loads(Path(spec).read_text()):
        run = dict(run)
        kind = run.pop("kind")
        if "image_size" in run:
            run["image_size"] = tuple(run["image_size"])
        {"video": train_video, "action": train_action, "tokenizer": train_tokenizer}[kind](**run)


if __name__ == "__main__":
    main(sys.argv[1])
