"""moda_core.comparison: the compare table's and the training-overhead JSON's format, written and read back, and
the one error a malformed file gives."""
import pytest
from helpers import COMPARE_CSV_EXAMPLE

from moda_core.comparison import (
    COMPARE_COLUMNS,
    CompareFileError,
    read_compare_table,
    read_train_overhead,
    write_compare_table,
    write_train_overhead,
)
from moda_core.errors import ModaError


def test_compare_table_round_trip(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(COMPARE_CSV_EXAMPLE)
    table = read_compare_table(source)
    assert list(table.columns[:len(COMPARE_COLUMNS)]) == list(COMPARE_COLUMNS) and len(table) == 6
    written = write_compare_table(tmp_path / "out.csv", table.to_dict("records"))
    again = read_compare_table(tmp_path / "out.csv")
    assert again.equals(table) and written.shape == table.shape
    assert (tmp_path / "out.md").read_text().startswith("| model | width | method |")
    (tmp_path / "bad.csv").write_text("model,width\nlenet5,1\n")
    with pytest.raises(CompareFileError, match="lacks the column"):
        read_compare_table(tmp_path / "bad.csv")
    assert issubclass(CompareFileError, ModaError)


def test_train_overhead_round_trip(tmp_path):
    path = tmp_path / "train_overhead.json"
    write_train_overhead(path, {"vgg16": {"moda_ratio": 1.25, "mwt_ratio": 1.5, "seconds_per_step": {"moda": 1}},
                                "device": "cpu", "width": 0.25})
    assert read_train_overhead(path) == ("cpu", {"vgg16": {"moda_ratio": 1.25, "mwt_ratio": 1.5}})
    path.write_text('{"vgg16": {"moda_ratio": "fast"}}')
    with pytest.raises(CompareFileError, match="should be a number"):
        read_train_overhead(path)
