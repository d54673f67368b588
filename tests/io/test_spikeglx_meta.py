"""SpikeGLX .meta: saved channels read through their acquisition-numbered fields, µV scaling, refusals.

Each test writes a small .bin + .meta (SpikeGLX Metadata_30 fields) and reads it back with `open_recording`.
Expected values are the SpikeGLX formula: µV = stored * AiRangeMax / MaxInt / gain * 1e6.
"""

import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.io.readers_ephys import open_recording

AP_GAINS = [50, 125, 250, 500, 1000, 1500, 2000, 3000]
LF_GAINS = [250, 500, 1000, 50, 125]


def np1_imro(n=384):
    """NP1.0 imroTbl with a different AP and LF gain pattern, so a wrong row or column shows."""
    return f"(0,{n})" + "".join(f"({c} 0 0 {AP_GAINS[c % 8]} {LF_GAINS[c % 5]} 1)" for c in range(n))


def ap_uv(c):
    return 0.6 / 512 / AP_GAINS[c % 8] * 1e6


def lf_uv(c):
    return 0.6 / 512 / LF_GAINS[c % 5] * 1e6


def write_glx(path, n_saved, samples=40, **meta):
    data = (np.arange(samples * n_saved).reshape(samples, n_saved) % 997 - 498).astype("<i2")
    data.tofile(path)
    meta = {"nSavedChans": n_saved, "fileSizeBytes": data.nbytes, "firstSample": 1000, **meta}
    lines = [f"{'~' if k in ('imroTbl', 'snsChanMap') else ''}{k}={v}" for k, v in meta.items()]
    path.with_suffix(".meta").write_text("\n".join(lines) + "\n")
    return data


IMEC = dict(typeThis="imec", imAiRangeMax=0.6, imAiRangeMin=-0.6, imMaxInt=512, imDatPrb_type=0, imSampRate=30000)


def expect(spec):
    """'AP0:3,SY0' -> [(kind, number), ...]"""
    out = []
    for part in spec.split(","):
        kind, rng = part[:2], part[2:]
        a, _, b = rng.partition(":")
        out += [(kind, k) for k in range(int(a), int(b or a) + 1)]
    return out


CASES = {
    # name: (file stem suffix, nSavedChans, meta fields, expected channels)
    "ap-all": ("ap", 385, dict(snsApLfSy="384,0,1", snsSaveChanSubset="all", acqApLfSy="384,384,1"), "AP0:383,SY0"),
    "lf-all": ("lf", 385, dict(snsApLfSy="0,384,1", snsSaveChanSubset="all", acqApLfSy="384,384,1", imSampRate=2500),
               "LF0:383,SY0"),
    "lf-subset": ("lf", 385, dict(snsApLfSy="0,384,1", snsSaveChanSubset="384:767,768", acqApLfSy="384,384,1",
                                  imSampRate=2500), "LF0:383,SY0"),
    "lf-subset-no-acq": ("lf", 385, dict(snsApLfSy="0,384,1", snsSaveChanSubset="384:767,768", imSampRate=2500),
                         "LF0:383,SY0"),
    "lf-part-no-sync": ("lf", 4, dict(snsApLfSy="0,384,1", snsSaveChanSubset="400:403", acqApLfSy="384,384,1",
                                      imSampRate=2500), "LF16:19"),
    "ap-subset": ("ap", 201, dict(snsApLfSy="384,0,1", snsSaveChanSubset="0:199,768", acqApLfSy="384,384,1"),
                  "AP0:199,SY0"),
    "ap-list": ("ap", 6, dict(snsApLfSy="384,0,1", snsSaveChanSubset="0,2,5:7,768"), "AP0,AP2,AP5:7,SY0"),
    "ap-only": ("ap", 3, dict(snsApLfSy="3,0,0", snsSaveChanSubset="10:12", acqApLfSy="384,384,1"), "AP10:12"),
    "chanmap": ("lf", 3, dict(snsChanMap="(384,384,1)(LF5;389:0)(LF9;393:1)(SY0;768:2)", imSampRate=2500),
                "LF5,LF9,SY0"),
}


@pytest.mark.parametrize("case", CASES)
def test_saved_channels_are_classified_and_scaled_by_acquisition_number(case, tmp_path):
    band, n_saved, fields, spec = CASES[case]
    path = tmp_path / f"run_g0_t0.imec0.{band}.bin"
    data = write_glx(path, n_saved, **{**IMEC, "imroTbl": np1_imro(), **fields})
    rec = open_recording(path)
    want = expect(spec)
    assert rec.channel_names == [f"{k}{n}" for k, n in want]
    uv = [ap_uv(n) if k == "AP" else lf_uv(n) if k == "LF" else 1.0 for k, n in want]
    np.testing.assert_allclose(rec.bit_volts, uv, rtol=1e-12)
    assert rec.meta["neural_channels"] == [i for i, (k, _) in enumerate(want) if k in ("AP", "LF")]
    np.testing.assert_allclose(rec.read(0, 5), data[:5] * np.array(uv, np.float32), rtol=1e-6)
    assert rec.sample_numbers[0] == 1000 and rec.sample_rate == float(fields.get("imSampRate", 30000))


def test_np2_fixed_gain_without_lf_band(tmp_path):
    imro = "(21,384)" + "".join(f"({c} 1 0 {c})" for c in range(384))
    path = tmp_path / "np2_g0_t0.imec0.ap.bin"
    write_glx(path, 385, **{**IMEC, "imDatPrb_type": 21, "imMaxInt": 8192, "imAiRangeMax": 0.5, "imroTbl": imro,
                            "snsApLfSy": "384,0,1", "snsSaveChanSubset": "0:384"})  # no acqApLfSy: from the imroTbl
    rec = open_recording(path)
    assert rec.channel_names[:2] == ["AP0", "AP1"] and rec.channel_names[-1] == "SY0"
    np.testing.assert_allclose(rec.bit_volts[:384], 0.5 / 8192 / 80 * 1e6)
    assert rec.bit_volts[384] == 1.0 and rec.meta["neural_channels"] == list(range(384))


def test_nidq_gains_per_channel_type(tmp_path):
    path = tmp_path / "run_g0_t0.nidq.bin"
    write_glx(path, 8, typeThis="nidq", niAiRangeMax=5.0, niMaxInt=32768, niMNGain=200, niMAGain=2, niSampRate=25000,
              snsMnMaXaDw="4,2,1,1", snsSaveChanSubset="all")
    rec = open_recording(path)
    assert rec.channel_names == ["MN0", "MN1", "MN2", "MN3", "MA0", "MA1", "XA0", "XD0"]
    step = 5.0 / 32768 * 1e6
    np.testing.assert_allclose(rec.bit_volts, [step / 200] * 4 + [step / 2] * 2 + [step, 1.0])
    assert rec.meta["neural_channels"] == [0, 1, 2, 3]


LF = dict(IMEC, imSampRate=2500, snsApLfSy="0,384,1", acqApLfSy="384,384,1", snsSaveChanSubset="384:767,768")
BAD = {
    "nSavedChans text": (dict(LF, nSavedChans="abc"), "nSavedChans"),
    "nSavedChans zero": (dict(LF, nSavedChans=0), "nSavedChans"),
    "nSavedChans huge": (dict(LF, nSavedChans=10**12), "nSavedChans"),
    "subset text": (dict(LF, snsSaveChanSubset="LF0-LF383"), "snsSaveChanSubset"),
    "subset backwards": (dict(LF, snsSaveChanSubset="767:384,768"), "backwards"),
    "subset count": (dict(LF, snsSaveChanSubset="384:700,768"), "lists 318 channels but nSavedChans=385"),
    "subset beyond": (dict(LF, snsSaveChanSubset="384:767,900"), "beyond the 769 acquired"),
    "acq counts": (dict(LF, acqApLfSy="384;384;1"), "acqApLfSy"),
    "range nan": (dict(LF, imAiRangeMax="nan"), "imAiRangeMax"),
    "range missing": ({k: v for k, v in LF.items() if k != "imAiRangeMax"}, "imAiRangeMax"),
    "rate negative": (dict(LF, imSampRate=-2500), "imSampRate"),
    "maxint": (dict(LF, imMaxInt="ten"), "imMaxInt"),
    "imro garbage": (dict(LF, imroTbl="(garbage)(x y z)"), "imroTbl"),
    "imro short": (dict(LF, imroTbl="(0,384)" + "".join(f"({c} 0 0 500 250 1)" for c in range(100))),
                   "no entry for probe channel 100"),
    "imro zero gain": (dict(LF, imroTbl="(0,384)" + "".join(f"({c} 0 0 500 0 1)" for c in range(384))), "LF gain"),
    "no imro": ({k: v for k, v in LF.items()}, "no entry for probe channel 0"),
    "type": (dict(LF, typeThis="camera"), "typeThis"),
    "sns counts": (dict(LF, snsSaveChanSubset="all", snsApLfSy="0,300,1"), "counts 301 channels"),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_meta_is_one_clear_line(case, tmp_path):
    fields, words = BAD[case]
    fields = {"imroTbl": np1_imro(), **fields} if "imroTbl" not in fields and case != "no imro" else fields
    path = tmp_path / "bad_g0_t0.imec0.lf.bin"
    write_glx(path, 385, **fields)  # the case's nSavedChans, if any, replaces the true one
    with pytest.raises(UserError) as err:
        open_recording(path)
    msg = str(err.value)
    assert words in msg and "\n" not in msg and len(msg) < 400, msg


def test_unreadable_meta_files(tmp_path):
    path = tmp_path / "x.imec0.ap.bin"
    np.zeros((10, 2), "<i2").tofile(path)
    meta = path.with_suffix(".meta")
    meta.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(UserError, match="binary"):
        open_recording(path)
    meta.write_text("no key value lines here\n")
    with pytest.raises(UserError, match="no key=value"):
        open_recording(path)
    with open(meta, "wb") as f:
        f.truncate(17 * 2**20)  # sparse: a 17 MiB "meta"
    with pytest.raises(UserError, match="too large"):
        open_recording(path)
    meta.unlink()
    with pytest.raises(UserError, match="needs its .meta"):
        open_recording(path)


def test_written_meta_keeps_every_line_but_what_changes(tmp_path):
    """The denoised file's .meta is the source's byte for byte -- order, `~` keys, CRLF line ends, a Latin-1
    note -- except the checksum of the new .bin and one added line saying what was done."""
    import hashlib

    from livedenoise.io.writers_ephys import writer_like

    src = tmp_path / "run_g0_t0.imec0.ap.bin"
    n = 50
    data = (np.arange(n * 5).reshape(n, 5) % 97 - 48).astype("<i2")
    data.tofile(src)
    imro = "(0,4)" + "".join(f"({c} 0 0 500 250 1)" for c in range(4))
    lines = ["acqApLfSy=4,4,1", "appVersion=20230815", "fileCreateTime=2024-01-02T03:04:05",
             f"fileSHA1={hashlib.sha1(data.tobytes()).hexdigest().upper()}", f"fileSizeBytes={data.nbytes}",
             f"fileTimeSecs={n / 30000:.6f}", "firstSample=12345", "imAiRangeMax=0.6", "imMaxInt=512",
             "imSampRate=30000", "imDatPrb_type=0", "nSavedChans=5", "snsApLfSy=4,0,1", "snsSaveChanSubset=0:3,768",
             "typeThis=imec", "userNotes=souris n\xb03", f"~imroTbl={imro}", "~muxTbl=(32,12)(0 1 24 25)",
             "~snsChanMap=(4,0,1)(AP0;0:0)(AP1;1:1)(AP2;2:2)(AP3;3:3)(SY0;768:768)", "~snsGeomMap=(NP1000,1,0,70)"]
    text = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    src.with_suffix(".meta").write_bytes(text)
    rec = open_recording(src)
    out = tmp_path / "den_g0_t0.imec0.ap.bin"
    w = writer_like(rec, out, description="denoised by livedenoise test-model")
    with w:
        for a in range(0, n, 20):
            w.write_raw(-rec.read_raw(a, a + 20), rec.sample_numbers[a:a + 20])
    assert src.with_suffix(".meta").read_bytes() == text  # the input is never modified
    written = out.with_suffix(".meta").read_bytes().split(b"\r\n")
    sha1 = hashlib.sha1(out.read_bytes()).hexdigest().upper()
    expected = [(f"fileSHA1={sha1}" if line.startswith("fileSHA1=") else line).encode("latin-1") for line in lines]
    assert written == expected + [b"livedenoiseNote=denoised by livedenoise test-model", b""]
    back = open_recording(out)
    assert back.sample_numbers[0] == 12345 and back.channel_names == rec.channel_names
    np.testing.assert_array_equal(back.read_raw(), -data)
