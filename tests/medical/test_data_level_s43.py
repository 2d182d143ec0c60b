"""A ``lidc_png`` data path one level too deep (a split folder, or a split's ``images/``) is named as such, with
the folder to give instead: the bare "<root>/train/train/images: no such folder" left the user to guess."""

from __future__ import annotations

import pytest

from domains.medical.data import LIDCPngDataset
from tests.helpers import write_lidc


@pytest.mark.parametrize("below", ["train", "train/images"])
def test_a_path_one_level_too_deep_names_the_root_to_give(tmp_path, below):
    root = write_lidc(tmp_path)
    with pytest.raises(FileNotFoundError, match="give (its parent|the folder above its split), ") as err:
        LIDCPngDataset(root / below, "train", crop_size=32)
    assert str(err.value).endswith(str(root))


def test_a_folder_of_no_layout_gets_no_hint(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        LIDCPngDataset(tmp_path, "train", crop_size=32)
    assert str(err.value).endswith("(expected <root>/<split>/images/<patient>/*.png)")
