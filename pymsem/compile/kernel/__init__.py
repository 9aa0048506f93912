"""The per-cluster Gaussian kernel: a two-level model's log-likelihood and gradient in one call.

``spec`` packs a model's level structures into two flat arrays, so that one compiled
function serves every model; ``numba_impl`` holds that function (the implied covariances
from the parameter vector, the collapsed Gaussian log-likelihood, and both gradients);
``reference`` is its NumPy twin for the tests; ``op`` wraps it as a PyTensor operation.
The whole-model kernel adds priors and PyMC's transforms around it (``priors``,
``model_numba``, read from a built ``pm.Model`` by ``flat_model``); ``cache`` keeps numba's
on-disk cache of all of them consistent across their files.
"""

# Before any kernel module defines a cached function: their cache stamp covers all their sources.
from pymsem.compile.kernel import cache as _cache  # noqa: F401
