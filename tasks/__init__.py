"""genzoo's pipeline, in two floors.

Stages (one DVC stage or CLI command each; the work as plain functions, ``main()`` where DVC
runs them): ``prepare``, ``train``, ``evaluate``, ``detect``, ``usefulness``, ``augment``,
``report``, and ``status`` (a CLI view, no ``main``). A stage imports only the ground floor,
never another stage; it reads another stage's outputs as files (``layout`` names them).

Ground floor: ``config`` (params), ``data`` (the prepared data), ``layout`` (run layout,
provenance: cache keys, the code a stage reads, training a model variant), ``tracking``
(MLflow), ``quality`` (scoring in the evaluator's feature space), ``sample`` (loading and
drawing from a model), ``latent`` (latent-space figures), ``figures`` (images and plots).
The Prefect wrappers live in ``genzoo.flows``.
"""
