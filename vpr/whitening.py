"""What PCA-whitening a training sample supports (docs/method.md, "PCA-whitening on small data sets").

Whitening k components fitted on N descriptors divides each principal direction by its standard deviation.
With k = N − 1 (the rank of N centered points) the fitted points become a regular simplex: every pairwise
distance is equal (2 + 2/(N − 1) after the L2 normalisation), so any ranking among them is a tie-break.
Close to it the whitened space is nearly as degenerate. Two rules, both only when whitening:

* **count**: k ≤ N / :data:`SAMPLES_PER_COMPONENT` (at least two descriptors per component);
* **spectrum**: the smallest kept eigenvalue is at least :data:`MIN_EIGENVALUE_RATIO` times the largest
  (a direction with less than 0.1 % of the leading standard deviation is rounding noise amplified).

Torch-free, so that the workflow can check a configuration at start-up without importing the models.
"""

from __future__ import annotations

SAMPLES_PER_COMPONENT = 2
MIN_EIGENVALUE_RATIO = 1e-6


def max_whitened_components(n_samples: int) -> int:
    """The most components the count rule allows to whiten from ``n_samples`` descriptors."""
    return n_samples // SAMPLES_PER_COMPONENT


def count_problem(n_samples: int, k: int, whiten: bool) -> str | None:
    """Why whitening ``k`` components of ``n_samples`` descriptors is refused (None: allowed)."""
    if not whiten or k <= max_whitened_components(n_samples):
        return None
    most = max_whitened_components(n_samples)
    return (f"whitening {k} PCA components needs at least {SAMPLES_PER_COMPONENT * k} training descriptors, "
            f"there are {n_samples}: whitened, so few points lie close to a regular simplex (all distances "
            f"equal, every ranking a tie-break); set pca.dim (--dim) to at most {most}, or whiten: false "
            f"(--no-whiten), or use at least {SAMPLES_PER_COMPONENT * k} training images")


def spectrum_problem(lams: list[float] | tuple[float, ...], whiten: bool) -> str | None:
    """Why whitening the eigenvalues ``lams`` (descending) is refused (None: allowed)."""
    if not whiten or not len(lams) or lams[-1] >= MIN_EIGENVALUE_RATIO * lams[0]:
        return None
    keep = sum(1 for lam in lams if lam >= MIN_EIGENVALUE_RATIO * lams[0])
    return (f"the smallest of the {len(lams)} PCA eigenvalues is {lams[-1]:.3g}, below "
            f"{MIN_EIGENVALUE_RATIO:g} times the largest ({lams[0]:.3g}): whitening would amplify rounding "
            f"noise (near-duplicate training images?); set pca.dim (--dim) to at most {keep}, or "
            "whiten: false (--no-whiten), or use more distinct training images")
