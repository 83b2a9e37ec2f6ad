"""Training code; submodules are imported on use so that importing this package stays cheap.

:mod:`.tokenizer` (``train_tokenizer``: the VQ tokenizer loop, PSNR / codebook-usage metrics,
reconstruction grids), :mod:`.codebook` (usage counting, dead-code restarts), :mod:`.optim` (muP
optimiser groups, warmup-stable-drop schedule), and the video / action training modules.
"""
