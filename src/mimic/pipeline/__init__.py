"""The pipeline on top of the library: params.yaml, the stages' settings and paths, DVC, the cluster.

- :mod:`mimic.pipeline.params`: loading and checking params.yaml, and the questions stages ask of it;
- :mod:`mimic.pipeline.stages`: the settings each job's results depend on (what a params edit reruns);
- :mod:`mimic.pipeline.paths`: where every stage reads and writes;
- :mod:`mimic.pipeline.dvc`: recording what Snakemake made in dvc.lock and DVC's cache;
- :mod:`mimic.pipeline.cluster`: the Slurm profile's site keys and resources.
"""
