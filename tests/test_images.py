"""The image data sets that ship inside installed packages (nfcourse.images)."""

import torch

from nfcourse import images as data


def test_digits_ship_offline_with_a_fixed_split():
    train, test = data.load_digits()
    assert train.shape[1] == test.shape[1] == 64
    assert len(train) + len(test) == 1797
    assert train.min() == 0 and train.max() == 16
    train2, _ = data.load_digits()
    assert torch.equal(train, train2)
