"""Sweeps: a paper table as a manifest of ``d4c-quant`` cells (:mod:`~d4c.sweep.manifest`), planned with the
pseudo-image generations they share (:mod:`~d4c.sweep.plan`), run as separate processes (:mod:`~d4c.sweep.jobs`)
locally, one per GPU or as SLURM job arrays through submitit (:mod:`~d4c.sweep.executors`), by ``d4c-sweep``
(:mod:`~d4c.sweep.cli`)."""
