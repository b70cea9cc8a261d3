"""Item features as data: user-supplied feature matrices (`.npy`, one row per item) and offline
text features (augmented views of item texts, a sentence encoder, one PCA basis, a cache).

Used by MACL (`sbrbench.models.macl`); nothing here knows about models or runs.
"""

from sbrbench.features.arrays import load_feature_matrix, pca_apply, pca_fit, read_matrix_cache, write_matrix_cache
from sbrbench.features.text import TEXT_VIEWS, augment, text_extra_available, text_view_features

__all__ = [
    "TEXT_VIEWS",
    "augment",
    "load_feature_matrix",
    "pca_apply",
    "pca_fit",
    "read_matrix_cache",
    "text_extra_available",
    "text_view_features",
    "write_matrix_cache",
]
