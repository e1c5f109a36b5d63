"""Everything that trains, evaluates and shows an agent, by concern (docs/layout.md).

``ppo/`` (recurrent PPO: trainer, learner, rollout, policy), ``dt/`` (the decision
transformer with working memory and its datasets), ``integrations/`` (sample-factory
and Stable-Baselines3), ``evaluation/`` (evaluation figures, videos), ``common/`` (run
tools both trainers reach: config, checkpoints, CLI, signals, reports). The commands
keep their names: ``python -m agents.train`` / ``train_dt`` / ``evaluate`` / ``record``
/ ``collect`` / ``report`` / ``sf_train`` / ``sf_enjoy`` are the small modules here.
"""

import contextlib
import gc
import os


@contextlib.contextmanager
def imports_without_gc(freeze: bool = False):
    """Python's cyclic garbage collector off while modules are imported; with ``freeze``
    (a command's start, not a library import) what exists then is moved out of its reach
    for good (``gc.freeze``: later collections skip it).

    Importing torch, gymnasium and the trainer builds a few hundred thousand objects, none
    of them garbage, and the collector went over them again and again: ``import torch,
    agents.train`` took 1.14-1.16 s with it and 0.97-0.98 s without (docs/benchmarks.md).
    ``RECALL_RL_IMPORT_GC=1`` leaves the collector on (to compare)."""
    if os.environ.get("RECALL_RL_IMPORT_GC") == "1":
        yield
        return
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_on:
            gc.enable()


# gymnasium loads ``envs`` as a plugin while it imports; importing it first keeps
# ``import agents.<anything>`` working whatever the caller imported before.
with imports_without_gc():
    import gymnasium  # noqa: F401
