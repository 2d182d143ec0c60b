"""shared.files: temporary outputs get the permissions of a plainly created file, not mkstemp's 0600."""

import os
import stat

from shared.files import temporary_file


def test_temporary_file_has_the_umask_permissions_and_a_hidden_unique_name(tmp_path):
    kept = os.umask(0o027)
    try:
        first = temporary_file(tmp_path, "clip.gif")
        second = temporary_file(tmp_path, "clip.gif")
        plain = tmp_path / "plain"
        plain.touch()
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(kept)
    assert first != second and first.parent == tmp_path and first.name.startswith(".clip.gif.")
    assert first.name.endswith(".tmp") and first.stat().st_size == 0
    assert stat.S_IMODE(first.stat().st_mode) == 0o640  # 0666 less 0027, by hand
    final = tmp_path / "final"
    os.replace(first, final)
    assert stat.S_IMODE(final.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
