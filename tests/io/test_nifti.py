"""4D NIfTI: a round trip keeps header, affine, TR, units and data; lazy reads; refusals; partial names."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.nifti import (NiftiWriter, bids_entities, nifti_partial_path, open_nifti, write_nifti)


def _run(path, shape=(6, 5, 4, 7), dtype=np.int16, tr=2.0, units=("mm", "sec"), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, size=shape).astype(dtype)
    affine = np.array([[-2.5, 0, 0, 30.0], [0, 2.5, 0, -40.0], [0, 0, 3.0, -12.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(*units)
    img.header["pixdim"][4] = tr
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=4)
    img.header["descrip"] = b"test run"
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"acquired on a test scanner"))
    nib.save(img, str(path))
    return data, affine


@pytest.mark.parametrize("name", ["sub-01_task-x_bold.nii.gz", "run.nii"])
def test_round_trip_keeps_header_affine_tr_units_data(tmp_path, name):
    src = tmp_path / name
    data, affine = _run(src)
    with open_nifti(src) as run:
        assert run.shape == (7, 6, 5, 4) and len(run) == 7 and run.volume_shape == (6, 5, 4)
        assert run.tr == 2.0 and run.units == ("mm", "sec")
        np.testing.assert_array_equal(run.read(2, 5), np.moveaxis(data, 3, 0)[2:5])  # lazy: a range of volumes
        vols = run.read(0, len(run))
        out = tmp_path / ("den_" + name)
        write_nifti(out, vols, run.header)
    assert not nifti_partial_path(out).exists()
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, affine)
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert float(back.header["pixdim"][4]) == 2.0
    assert int(back.header["sform_code"]) == 4 and int(back.header["qform_code"]) == 1
    assert back.header["descrip"].tobytes().rstrip(b"\0") == b"test run"
    np.testing.assert_allclose(back.header["pixdim"][1:5], [2.5, 2.5, 3.0, 2.0])
    assert [e.get_content() for e in back.header.extensions] == [b"acquired on a test scanner"]
    if name.endswith(".gz"):
        with gzip.open(out) as f:  # really gzip
            f.read(4)
    with open_nifti(out) as again:
        assert again.tr == 2.0 and again.bids == bids_entities(out)


def test_tr_in_milliseconds_is_read_in_seconds(tmp_path):
    src = tmp_path / "ms.nii.gz"
    _run(src, tr=800.0, units=("mm", "msec"))
    with open_nifti(src) as run:
        assert run.tr == pytest.approx(0.8) and run.units == ("mm", "msec")
        out = tmp_path / "ms_out.nii.gz"
        write_nifti(out, run.read(0, len(run)).astype(np.float32), run.header)
    back = nib.load(str(out))
    assert back.header.get_xyzt_units() == ("mm", "msec") and float(back.header["pixdim"][4]) == 800.0
    assert back.get_data_dtype() == np.float32


def test_bids_entities():
    assert bids_entities("sub-01_task-x_bold.nii.gz") == {"sub": "01", "task": "x", "suffix": "bold"}
    assert bids_entities("sub-01_ses-2_task-rest_run-1_bold.nii") == {
        "sub": "01", "ses": "2", "task": "rest", "run": "1", "suffix": "bold"}


def test_refuses_3d_ambiguous_and_non_time(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "anat.nii.gz"))
    with pytest.raises(UserError, match="3D volume"):
        open_nifti(tmp_path / "anat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3, 2), np.float32), np.eye(4)), str(tmp_path / "five.nii"))
    with pytest.raises(UserError, match="ambiguous"):
        open_nifti(tmp_path / "five.nii")
    _run(tmp_path / "hz.nii", units=("mm", "hz"))
    with pytest.raises(UserError, match="not time"):
        open_nifti(tmp_path / "hz.nii")
    (tmp_path / "bad.nii").write_bytes(b"not a nifti file at all")
    with pytest.raises(UserError, match="not a readable NIfTI"):
        open_nifti(tmp_path / "bad.nii")
    with pytest.raises(UserError, match="does not exist"):
        open_nifti(tmp_path / "missing.nii.gz")


def test_interrupted_write_stays_partial(tmp_path):
    src = tmp_path / "run.nii.gz"
    _run(src)
    run = open_nifti(src)
    out = tmp_path / "den.nii.gz"
    with pytest.raises(RuntimeError):
        with NiftiWriter(out, run.header, len(run), run.volume_shape, run.dtype) as w:
            w.write(run.read(0, 3))
            assert nifti_partial_path(out).name == "den.partial.nii.gz" and nifti_partial_path(out).exists()
            raise RuntimeError("stop")
    assert not out.exists() and nifti_partial_path(out).exists()


def test_reads_are_lazy_and_nifti2_round_trips(tmp_path):
    src = tmp_path / "sub-02_task-y_bold.nii"
    data = np.arange(4 * 3 * 2 * 5, dtype=np.float32).reshape(4, 3, 2, 5)
    img = nib.Nifti2Image(data, np.diag([3.0, 3.0, 3.5, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 1.5
    nib.save(img, str(src))
    run = open_nifti(src)
    np.testing.assert_array_equal(run.read(1, 2)[0], data[..., 1])
    assert not run._img.in_memory  # volumes come from the data object, the array is never loaded whole
    out = tmp_path / "out.nii"
    write_nifti(out, run.read(0, len(run)), run.header)
    back = nib.load(str(out))
    assert isinstance(back, nib.Nifti2Image) and float(back.header["pixdim"][4]) == 1.5
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)


def test_bids_sidecar_tr_when_the_header_has_none(tmp_path):
    src = tmp_path / "sub-01_task-x_bold.nii.gz"
    _run(src, tr=0.0)
    assert open_nifti(src).tr is None
    (tmp_path / "sub-01_task-x_bold.json").write_text('{"RepetitionTime": 0.72}')
    run = open_nifti(src)
    assert run.tr == 0.72 and run.tr_source == "sidecar"
    _run(src, tr=2.0)  # the header's own TR wins
    assert open_nifti(src).tr_source == "header"


def test_trailing_singleton_axes_are_a_4d_run(tmp_path):
    data = np.arange(3 * 3 * 2 * 4, dtype=np.int16).reshape(3, 3, 2, 4, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "five1.nii.gz"))
    run = open_nifti(tmp_path / "five1.nii.gz")
    assert run.shape == (4, 3, 3, 2) and run.tr is None
    np.testing.assert_array_equal(run.read(0, 4), np.moveaxis(data[..., 0], 3, 0))
