"""Shared test set-up.

The tests run many small tensor ops; on a 2-core machine torch's intra-op
thread pool costs more than it gains there (and under load it is an order of
magnitude slower), so the suite runs torch on one thread.
"""

import torch

torch.set_num_threads(1)
