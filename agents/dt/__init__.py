"""The decision transformer with working memory (DT-Mem) and its data.

``model`` (the transformer over return-to-go, observation and action tokens, with a
memory core), ``trainer`` (``python -m agents.train_dt``), ``evaluate``
(return-conditioned play), ``collect`` (Minari datasets; ``python -m agents.collect``).
"""
