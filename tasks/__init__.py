"""Pipeline stages: each module holds the work as a plain function, and ``main()`` for its
DVC stage. Prefect wrappers are added beside them by the orchestration layer."""
