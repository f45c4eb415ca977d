"""Runs: where the record meets the code. The configuration (:mod:`~pvae.runs.config`), building a
model from it (:mod:`~pvae.runs.build`), the run folder and its checkpoints
(:mod:`~pvae.runs.folder`, :mod:`~pvae.runs.checkpoint`), and the orchestrators that train,
evaluate, compare and draw a run."""
