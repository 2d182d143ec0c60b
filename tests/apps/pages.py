"""What the page tests share: running a page (and uploading to it), checking a run (no exception, no error box),
and reading what it shows (texts, image captions, metrics)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APPS = Path(__file__).resolve().parents[2] / "apps"
TIMEOUT = 60  # seconds per script run (the first run loads torch models)
UPLOAD_CHOICE = {"medical": "Upload a file", "driving": "Upload a photo"}  # each page's source radio


def page(name: str) -> AppTest:
    """``apps/views/<name>.py`` after its first run."""
    return AppTest.from_file(str(APPS / "views" / f"{name}.py"), default_timeout=TIMEOUT).run()


def upload(at: AppTest, key: str, name: str, data: bytes, mime: str = "application/octet-stream") -> AppTest:
    at.file_uploader(key=key).set_value((name, data, mime))
    return at.run()


def upload_on(name_of_page: str, name: str, data: bytes) -> AppTest:
    """The page with its source switched to an upload (``<page>_source``), then ``data`` uploaded as ``name``."""
    at = page(name_of_page)
    at.radio(key=f"{name_of_page}_source").set_value(UPLOAD_CHOICE[name_of_page]).run()
    return upload(page_ok(at), f"{name_of_page}_upload", name, data)


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def page_ok(at):
    """The AppTest after a run, asserting it raised nothing and showed no error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(elements) -> str:
    """The shown elements' values joined with " | " (for assertions on what a page says)."""
    return " | ".join(str(e.value) for e in elements)


def record_downloads(monkeypatch) -> dict:
    """{file name: data function} of every download button drawn from now on (Streamlit runs a button's data
    function when it is clicked; a test calls it to get the file). Insertion-ordered, newest last."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    made: dict = {}
    original = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made.pop(file_name, None)
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return made


def slab_mask(at: AppTest, made: dict, first: int, last: int, label: str):
    """The medical page's range-of-slices mean mask for slices ``first``..``last`` (the slider, labelled
    ``label``, set to them), as the NIfTI its download holds (``made``: :func:`record_downloads`)."""
    import gzip

    import nibabel as nib

    slab = at.slider(key="medical_slab")
    assert slab.label == label
    slab.set_value((first, last)).run()
    page_ok(at)
    name = next(n for n in made if n.endswith(f"_slices_{first}-{last}_mean_mask.nii.gz"))
    return nib.Nifti1Image.from_bytes(gzip.decompress(made[name]()))
