"""The checkpoint-leak warning counts the split's groups by name: the LIDC pickle names no patient and is split
by scan, so its groups are scans, not "patients" as the other medical formats' are."""

from __future__ import annotations

from domains.medical.data import MedicalDataModule


def test_the_pickles_groups_are_scans_and_the_other_formats_patients(tmp_path):
    pickle = MedicalDataModule(data_format="lidc_pickle", data_path=str(tmp_path / "lidc.pickle"), num_workers=0)
    assert pickle.GROUP_UNIT == "scans"
    assert MedicalDataModule(data_format="lidc_png", num_workers=0).GROUP_UNIT == "patients"
    assert MedicalDataModule(data_format="decathlon", data_path=str(tmp_path), num_workers=0).GROUP_UNIT == "patients"
