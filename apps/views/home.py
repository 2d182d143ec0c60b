"""Home page: what the demos show and which checkpoints they use."""

from __future__ import annotations

import streamlit as st

from apps import demo_models as dm
from apps import uploads as up

st.title("Applied deep learning: medical imaging and driving")
st.write(
    "Two demos on one set of shared backbones and Lightning pieces. Pick a page in the sidebar. The models "
    "shown are the shipped demo weights (`apps/weights/`, each with a model card: command, data, test "
    "figures), trained on the suite's embedded synthetic data: they show the workflow, not state-of-the-art "
    f"accuracy on real scans or roads. `{dm.demo_command('demo-train', '--train')}` retrains quick versions here."
)

left, right = st.columns(2)
with left:
    st.subheader("Medical: lesions")
    st.write(
        "U-Net, Probabilistic U-Net and Hierarchical Probabilistic U-Net on four-reader lesion data "
        "(LIDC-IDRI style): several plausible segmentations per image, their mean, a per-pixel uncertainty "
        "map, and GED / Dice against the readers. Upload PNG / JPEG, DICOM or NIfTI."
    )
with right:
    st.subheader("Driving: roads")
    st.write(
        "FCOS detection of cars, pedestrians and cyclists, their Mask R-CNN instance masks (with a score "
        "slider), and a per-pixel road-anomaly heat map with the frame's anomaly score. Upload a road photo "
        f"(PNG, JPEG or WebP, up to {up.MAX_PIXELS / 1e6:.0f} megapixels and {up.MAX_UPLOAD_MB} MB); results download "
        "as KITTI text, 16-bit instance-id maps and PNG."
    )
    st.write(
        "Accident risk: over a dashcam clip (synthetic, or an uploaded mp4 / zip of frames), the probability "
        "of contact within 0.5-2 s at every frame, the alarm moment and the object it is about."
    )

st.subheader("Checkpoints")
rows = []
for key, spec in dm.DEMO_MODELS.items():
    path = dm.find_checkpoint(key)
    info = dm.read_metrics(key)
    rows.append(
        {
            "model": spec.title,
            "checkpoint": path.name if path else "missing",
            "test figures": (
                dm.format_metrics(info, spec.headline, limit=4) if path else f"train: {dm.train_command(key)}"
            ),
        }
    )
st.dataframe(rows, hide_index=True, width="stretch")
st.caption(
    f"Shipped weights: `{dm.shipped_dir()}` (fp16 safetensors, each with a model card: command, data, date, test "
    f"figures, sha256). Local checkpoints from `{dm.demo_command('demo-train', '--train')}` in "
    f"`{dm.checkpoint_dir()}` (set `{dm.ENV_CHECKPOINTS}` to use another) are preferred when present; each "
    f"page's sidebar takes your own checkpoint. Uploads up to {up.MAX_UPLOAD_MB} MB are decoded in memory (a "
    "video through a temporary file, deleted once decoded). An upload, its pixels and the models' results on "
    "it are kept in your session only (so that a slider does not run the models again), and dropped when you "
    "remove or replace the file or the session ends; only the synthetic examples' results are cached for every "
    "visitor."
)
