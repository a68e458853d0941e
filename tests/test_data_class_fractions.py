"""Per-class training fractions (``class_fractions``): the scarce-target weak runs of module replacement."""
import pytest
import torch

from moda_core.data import check_class_fractions, load_dataset
from moda_core.errors import ModaError
from moda_core.train import TrainConfig


def test_named_classes_get_their_own_share_and_the_others_keep_theirs():
    plain = load_dataset(classes=[3, 5, 6], train_fraction=0.1)
    scarce = load_dataset(classes=[3, 5, 6], train_fraction=0.1, class_fractions={3: 0.02})
    assert torch.bincount(plain.train.labels).tolist() == [40, 40, 40]
    assert torch.bincount(scarce.train.labels).tolist() == [8, 40, 40]  # mnist5k: 400 training digits a class
    for label in (1, 2):  # the same samples of the classes not named (one seeded permutation per class)
        assert torch.equal(plain.train.images[plain.train.labels == label],
                           scarce.train.images[scarce.train.labels == label])
    # the 8 digits of class 3 are among the 40 the plain run kept (the first of the same permutation)
    kept = {bytes(x.flatten().tolist()) for x in plain.train.images[plain.train.labels == 0]}
    assert all(bytes(x.flatten().tolist()) in kept for x in scarce.train.images[scarce.train.labels == 0])
    again = load_dataset(classes=[3, 5, 6], train_fraction=0.1, class_fractions={"3": 0.02})  # as read from JSON
    assert torch.equal(again.train.images, scarce.train.images)
    assert torch.equal(scarce.test.labels, plain.test.labels)  # the test split is never thinned
    other_seed = load_dataset(classes=[3, 5, 6], train_fraction=0.1, class_fractions={3: 0.02}, seed=1)
    assert not torch.equal(other_seed.train.images, scarce.train.images)


def test_a_share_can_also_raise_a_class_above_the_common_fraction():
    data = load_dataset(classes=[0, 1], train_fraction=0.05, class_fractions={1: 1.0})
    assert torch.bincount(data.train.labels).tolist() == [20, 400]


@pytest.mark.parametrize("fractions,message", [
    ({7: 0.5}, r"class fraction given for class 7 .* not learnt \(the classes are \[3, 5\]\)"),
    ({3: 0.0}, r"class fraction of class 3 .* must be in \(0, 1\], got 0.0"),
    ({3: 1.5}, r"must be in \(0, 1\], got 1.5"),
    ({3: "half"}, r"class fraction of class 3 .* must be a number, got 'half'"),
    ({"three": 0.5}, r"class fraction key 'three' .* is not a class id"),
])
def test_bad_class_fractions_are_clear_errors(fractions, message):
    with pytest.raises(ModaError, match=message):
        check_class_fractions(fractions, [3, 5], "the test")
    with pytest.raises(ModaError, match=message.split(" .*")[0]):
        TrainConfig(classes=[3, 5], class_fractions=fractions).validate()


def test_train_config_normalises_class_fraction_keys():
    config = TrainConfig(classes=[3, 5], class_fractions={"5": 0.5, 3: 0.02})
    config.validate()
    assert config.class_fractions == {3: 0.02, 5: 0.5}
    everything = TrainConfig(class_fractions={9: 0.1})  # classes=None: every class of the data set
    everything.validate()
    assert everything.class_fractions == {9: 0.1}
