import numpy as np

from imgcls.data.split import cap_per_class, stratified_split


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    train, val, test = stratified_split(labels, [0.2, 0.1], seed=3)
    assert len(set(train) | set(val) | set(test)) == len(labels)
    assert not set(train) & set(val) and not set(val) & set(test) and not set(train) & set(test)
    assert np.bincount(labels[val]).tolist() == [20, 10, 2]
    assert np.bincount(labels[test]).tolist() == [10, 5, 1]
    again = stratified_split(labels, [0.2, 0.1], seed=3)
    assert all((a == b).all() for a, b in zip((train, val, test), again))
    other = stratified_split(labels, [0.2, 0.1], seed=4)
    assert not (other[1] == val).all()


def test_tiny_classes_keep_a_training_sample():
    labels = np.array([0, 1, 1, 1])
    train, val = stratified_split(labels, [0.5], seed=0)
    assert 0 in labels[train]


def test_cap_per_class():
    labels = np.repeat([0, 1], [30, 5])
    kept = cap_per_class(labels, 10, seed=0)
    assert np.bincount(labels[kept]).tolist() == [10, 5]
