"""The per-cluster Gaussian kernel: a two-level model's log-likelihood and gradient in one call.

``spec`` packs a model's level structures into two flat arrays, so that one compiled
function serves every model; ``numba_impl`` holds that function (the implied covariances
from the parameter vector, the collapsed Gaussian log-likelihood, and both gradients);
``reference`` is its NumPy twin for the tests; ``op`` wraps it as a PyTensor operation.
"""
