"""Training: the ICL teacher, the training loop every method shares, and training on your own examples.

- :mod:`mimic.training.teacher`: the frozen model with demonstrations; its hidden states cached on disk;
- :mod:`mimic.training.loop`: the objective (alignment, CE, KL) and the loop (the pipeline's ``mimic train``);
- :mod:`mimic.training.learn`: :func:`mimic.train`, the same loop on a user's examples (online teacher).
"""
