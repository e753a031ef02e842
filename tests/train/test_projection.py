"""2-D projections for the report (loopline.train.projection)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

from loopline.errors import TrainError
from loopline.train.projection import project_2d, projection_rows


def test_pca_projection_matches_scikit_learn() -> None:
    X, _ = make_blobs(n_samples=120, n_features=6, centers=3, random_state=0)
    coords = project_2d(X, method="pca", seed=0)
    reference = PCA(n_components=2, svd_solver="full").fit_transform(X)
    np.testing.assert_allclose(np.abs(coords), np.abs(reference), atol=1e-10)


def test_tsne_keeps_separated_clusters_apart() -> None:
    X, y = make_blobs(n_samples=150, n_features=10, centers=3, cluster_std=1.0, random_state=1)
    coords = project_2d(X, method="tsne", seed=0)
    assert coords.shape == (150, 2)
    neighbours = KNeighborsClassifier(n_neighbors=5).fit(coords, y)
    assert neighbours.score(coords, y) > 0.95


def test_tsne_is_reproducible_under_a_seed() -> None:
    X, _ = make_blobs(n_samples=80, n_features=5, random_state=2)
    first = project_2d(X, method="tsne", seed=7)
    np.testing.assert_array_equal(first, project_2d(X, method="tsne", seed=7))


def test_both_methods_sub_sample_the_same_rows() -> None:
    X, _ = make_blobs(n_samples=300, n_features=4, random_state=3)
    rows = projection_rows(len(X), seed=5, max_rows=60)
    assert len(rows) == len(np.unique(rows)) == 60
    assert np.all(np.diff(rows) > 0)
    tsne = project_2d(X, method="tsne", seed=5, max_rows=60)
    pca = project_2d(X, method="pca", seed=5, max_rows=60)
    assert tsne.shape == pca.shape == (60, 2)
    reference = PCA(n_components=2, svd_solver="full").fit_transform(X[rows])
    np.testing.assert_allclose(np.abs(pca), np.abs(reference), atol=1e-10)


def test_few_rows_are_all_kept_in_order() -> None:
    assert projection_rows(4, seed=0).tolist() == [0, 1, 2, 3]


def test_a_single_feature_gets_a_zero_second_coordinate() -> None:
    X = np.linspace(0, 1, 20).reshape(-1, 1)
    coords = project_2d(X, method="pca", seed=0)
    assert coords.shape == (20, 2)
    assert np.all(coords[:, 1] == 0)


def test_sparse_input_is_accepted() -> None:
    X, _ = make_blobs(n_samples=40, n_features=5, random_state=4)
    dense = project_2d(X, method="pca", seed=0)
    np.testing.assert_allclose(project_2d(sparse.csr_matrix(X), method="pca", seed=0), dense)


def test_missing_values_are_an_error() -> None:
    X = np.ones((10, 3))
    X[2, 1] = np.nan
    with pytest.raises(TrainError, match="NaN"):
        project_2d(X, method="pca", seed=0)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(TrainError, match="unknown projection method 'umap'"):
        project_2d(np.ones((10, 3)), method="umap", seed=0)  # type: ignore[arg-type]


def test_too_few_rows_is_an_error() -> None:
    with pytest.raises(TrainError, match="at least 3 rows"):
        project_2d(np.ones((2, 3)), method="tsne", seed=0)
