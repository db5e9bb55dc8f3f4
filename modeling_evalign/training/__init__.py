"""Training of the alignment strategies: ONE loop, one place per concern (import from the module files).

- ``loop``: the training loop (``train``, ``run``; Accelerate, one process or many) and ``RunOptions``
- ``schedule``: the optimizer (AdamW) and the warm-up + cosine schedule
- ``checkpointing``: resumable ``checkpoint-<step>`` directories (save, load, prune, ``latest``)
- ``finish``: the final directory, the training_info.json writer, model card and push
- ``evaluation``: validation metrics (sharded and gathered across processes)
- ``config`` (``TrainConfig``, command-line parsing), ``data`` (datasets, sharded batch order),
  ``models`` (strategy -> model)
- ``trainer``: the brief's ``ContrastiveAlignmentTrainer``, a facade over ``loop.train``
"""
