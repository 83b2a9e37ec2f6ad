"""Training code; submodules are imported on use so that importing this package stays cheap.

:mod:`.tokenizer` (``train_tokenizer``: the VQ tokenizer loop, PSNR / codebook-usage metrics,
reconstruction grids), :mod:`.codebook` (usage counting, dead-code restarts), :mod:`.optim` (muP
optimiser groups, warmup-stable-drop schedule), the video / action training modules,
:mod:`.resume` (exact resume, checkpoints, pre-emption), :mod:`.distributed` (DDP / FSDP / DeepSpeed
strategies, global batch and accumulation, activation checkpointing), :mod:`.consolidate`
(``vavam checkpoint consolidate``) and :mod:`.memory` (``vavam plan-memory``).
"""
