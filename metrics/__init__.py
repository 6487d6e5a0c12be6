"""Pure functions on tensors/arrays for evaluating generative models (no I/O): ``likelihood``
(bits/dim), ``quality`` (Fréchet distance, KID, precision/recall/density/coverage, ...),
``anomaly`` (AUROC, typicality). Import them from their modules: a stage then reads only the
metrics it uses (its code hash, tasks/layout.py)."""
