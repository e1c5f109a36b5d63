"""Run tools both trainers reach.

``config`` (compose, env knobs, building envs and policies), ``cli`` (argument checks,
the Hydra launch), ``checkpoint``, ``run_dir``, ``signals`` (a clean stop on SIGTERM
and friends), ``device``, ``malloc`` (glibc keeps freed memory), ``adam``, ``encoders`` (observation encoders by space),
``multi_hot`` (one-hot symbols, and their normalised one-hot through an MLP, gathered),
``results`` (``results.json``), ``sweep`` (multirun folders), ``report`` (statistics
over a sweep; ``python -m agents.report``), ``tree``.
"""
