"""Image data loading: folders of classes and tables of paths/bytes round-trip, DICOM and 16-bit PNG
pixels come out right, and every bad input names its file (or is listed in .skipped with skip_bad)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tunesmith.data.images import ImageExamples, image_examples, load_image
from tunesmith.errors import DataError


def png(path: Path, color=(255, 0, 0), size=(8, 6), noise: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:  # incompressible, so cutting the file really truncates the pixel data
        arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
    else:
        Image.new("RGB", size, color).save(path)
    return path


def png_bytes(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, format="PNG")
    return buf.getvalue()


def truncate(path: Path) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs) -> Path:
    """A minimal valid DICOM file (explicit VR little endian, with the 128-byte preamble + DICM)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(pixels.astype(np.uint16), photometric_interpretation=photometric, bits_stored=16)
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def grey(im: Image.Image) -> list:
    assert im.mode == "RGB"
    a = np.asarray(im)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()  # grey stays grey in RGB
    return a[..., 0].tolist()


# -- folders -----------------------------------------------------------------------------------------------


def test_folder_of_classes_round_trip(tmp_path):
    root = tmp_path / "scans"
    png(root / "dog" / "sub" / "c.bmp", (0, 0, 255))
    png(root / "cat" / "b.png", (0, 255, 0))
    Image.new("RGB", (5, 5), (255, 0, 0)).save(root / "cat" / "a.JPG", quality=100)
    (root / ".DS_Store").write_bytes(b"\0junk")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0junk")
    (root / "cat" / ".hidden").mkdir()
    (root / "cat" / ".hidden" / "notes.txt").write_text("ignored")

    ex = image_examples(root)
    assert ex.labels == ["cat", "cat", "dog"]
    assert ex.names == [str(root / "cat" / "a.JPG"), str(root / "cat" / "b.png"), str(root / "dog" / "sub" / "c.bmp")]
    assert ex.items == [os.path.abspath(n) for n in ex.names] and all(os.path.isabs(i) for i in ex.items)
    assert ex.skipped == [] and len(ex) == 3 and ex.source == str(root)
    assert np.asarray(load_image(ex.items[2])).tolist()[0][0] == [0, 0, 255]
    assert load_image(ex.items[0]).size == (5, 5)
    sub = ex.subset([2], source="val")
    assert (sub.labels, sub.names, sub.source) == (["dog"], [ex.names[2]], "val")


def test_unlabelled_flat_folder_allowed_only_without_labels(tmp_path):
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    ex = image_examples(tmp_path, require_labels=False)
    assert ex.labels is None and [Path(n).name for n in ex.names] == ["a.png", "b.png"]
    with pytest.raises(DataError, match="no class sub-folders"):
        image_examples(tmp_path)


@pytest.mark.parametrize(
    "make, needles",
    [
        (
            lambda r: (png(r / "cat" / "a.png"), (r / "cat" / "notes.txt").write_text("x")),
            ["notes.txt", ".png", ".dcm"],
        ),
        (lambda r: (png(r / "cat" / "a.png"), (r / "dog").mkdir()), [os.path.join("data", "dog"), "no images"]),
        (lambda r: (png(r / "cat" / "a.png"), png(r / "stray.png")), ["stray.png", "no label"]),
        (lambda r: truncate(png(r / "cat" / "broken.png", noise=True)), ["broken.png", "--skip-bad-images"]),
        (lambda r: None, ["no class sub-folders"]),
    ],
)
def test_bad_folder_names_the_offending_file(tmp_path, make, needles):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(DataError) as e:
        image_examples(root)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="path not found: .*nope"):
        image_examples(tmp_path / "nope")


def test_skip_bad_records_truncated_file_and_keeps_the_rest(tmp_path):
    png(tmp_path / "cat" / "a.png")
    bad = truncate(png(tmp_path / "cat" / "bad.png", noise=True))
    png(tmp_path / "dog" / "b.png")
    ex = image_examples(tmp_path, skip_bad=True)
    assert ex.names == [str(tmp_path / "cat" / "a.png"), str(tmp_path / "dog" / "b.png")]
    assert ex.labels == ["cat", "dog"]
    assert len(ex.skipped) == 1 and ex.skipped[0][0] == str(bad) and "truncated" in ex.skipped[0][1].lower()
    assert ex.subset([0]).skipped == ex.skipped  # a split still reports what the source skipped


def test_skip_bad_that_empties_a_class_is_an_error(tmp_path):
    png(tmp_path / "cat" / "a.png")
    truncate(png(tmp_path / "dog" / "bad.png", noise=True))
    with pytest.raises(DataError, match=r"'dog'.*empty .*bad\.png"):
        image_examples(tmp_path, skip_bad=True)


# -- tables ------------------------------------------------------------------------------------------------


def test_table_with_relative_paths_resolves_against_its_folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    png(data / "imgs" / "x.png", (10, 20, 30))
    png(data / "imgs" / "y.png", (40, 50, 60))
    (data / "labels.csv").write_text("image,label\nimgs/x.png,1\nimgs/y.png,0\n")
    monkeypatch.chdir(tmp_path)  # relative to the table, not to the working directory
    ex = image_examples("data/labels.csv")
    assert ex.items == [str(data / "imgs" / "x.png"), str(data / "imgs" / "y.png")]
    assert ex.labels == ["1", "0"]
    assert ex.names[1].startswith("data/labels.csv row 2") and "y.png" in ex.names[1]
    assert np.asarray(load_image(ex.items[1]))[0, 0].tolist() == [40, 50, 60]


def test_parquet_with_image_bytes_and_hf_dicts(tmp_path):
    table = tmp_path / "train.parquet"
    pd.DataFrame({"img": [png_bytes((255, 0, 0)), png_bytes((0, 255, 0))], "y": ["red", "green"]}).to_parquet(table)
    ex = image_examples(table, image_column="img", label_column="y")
    assert ex.labels == ["red", "green"] and all(isinstance(it, bytes) for it in ex.items)
    assert ex.names == [f"{table} row 1", f"{table} row 2"]
    assert [np.asarray(load_image(it))[0, 0].tolist() for it in ex.items] == [[255, 0, 0], [0, 255, 0]]

    # as HF datasets writes an Image column: a struct of bytes (may be null) and the original path
    png(tmp_path / "rel.png", (1, 2, 3))
    cells = [{"bytes": png_bytes((0, 0, 255)), "path": "ignored.png"}, {"bytes": None, "path": "rel.png"}]
    pd.DataFrame({"image": cells, "label": [1, 2]}).to_parquet(table)
    ex = image_examples(table)
    assert isinstance(ex.items[0], bytes) and ex.items[1] == str(tmp_path / "rel.png")
    assert [np.asarray(load_image(it))[0, 0].tolist() for it in ex.items] == [[0, 0, 255], [1, 2, 3]]


def test_table_missing_image_file_names_row_and_path(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("image,label\na.png,cat\ngone.png,dog\n")
    with pytest.raises(DataError) as e:
        image_examples(tmp_path / "labels.csv")
    assert f"labels.csv row 2: image file not found: {tmp_path / 'gone.png'}" in str(e.value)


def test_table_empty_image_cell_and_missing_label(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("image,label\na.png,cat\n,dog\n")
    with pytest.raises(DataError, match=r"empty image cell in column 'image' at row 2"):
        image_examples(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("image,label\na.png,cat\na.png,\n")
    with pytest.raises(DataError, match=r"t\.csv: missing label .* column 'label' at row 2"):
        image_examples(tmp_path / "t.csv")
    assert image_examples(tmp_path / "t.csv", require_labels=False, label_column="none").labels is None


def test_table_undecodable_image_names_row_and_file(tmp_path):
    png(tmp_path / "ok.png")
    (tmp_path / "fake.png").write_text("not an image")
    (tmp_path / "t.csv").write_text("image,label\nok.png,a\nfake.png,b\nok.png,b\n")
    with pytest.raises(DataError, match=r"t\.csv row 2 \(.*fake\.png\): cannot decode image"):
        image_examples(tmp_path / "t.csv")
    ex = image_examples(tmp_path / "t.csv", skip_bad=True)
    assert ex.labels == ["a", "b"] and "fake.png" in ex.skipped[0][0]


# -- pixels ------------------------------------------------------------------------------------------------


def test_dicom_rescale_then_first_window(tmp_path):
    # stored 0..300 -> slope 2, intercept -200 -> -200, 0, 200, 400; window 100 +/- 200 -> -100..300
    f = dicom(
        tmp_path / "ct.dcm",
        np.array([[0, 100, 200, 300]]),
        RescaleSlope=2,
        RescaleIntercept=-200,
        WindowCenter=[100, 40],
        WindowWidth=[400, 80],
    )
    assert grey(load_image(str(f))) == [[0, 64, 191, 255]]


def test_dicom_monochrome1_minmax_inverted_from_bytes(tmp_path):
    f = dicom(tmp_path / "x.dcm", np.array([[0, 1000], [4000, 4000]]), photometric="MONOCHROME1")
    raw = f.read_bytes()
    assert raw[128:132] == b"DICM"
    assert grey(load_image(raw)) == [[255, 191], [0, 0]]  # no window: min..max, then bright = low


def test_dicom_multiframe_uses_middle_frame(tmp_path):
    frames = np.stack([np.zeros((1, 2)), np.array([[0, 100]]), np.full((1, 2), 100)])
    f = dicom(tmp_path / "cine.dcm", frames, WindowCenter=50, WindowWidth=100)
    assert grey(load_image(str(f))) == [[0, 255]]


def test_dicom_in_class_folder_and_bad_dicom_named(tmp_path):
    dicom(tmp_path / "a" / "1.dcm", np.array([[0, 1]]))
    png(tmp_path / "b" / "2.png")
    assert image_examples(tmp_path).labels == ["a", "b"]
    (tmp_path / "a" / "1.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataError, match=r"1\.dcm: cannot decode image"):
        image_examples(tmp_path)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    f = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 1000, 257 * 128, 65535]], dtype=np.uint16)).save(f)
    assert Image.open(f).mode == "I;16"
    assert grey(load_image(str(f))) == [[0, 4, 128, 255]]


def test_grey_palette_and_transparent_images_become_rgb(tmp_path):
    Image.new("L", (2, 2), 77).save(tmp_path / "l.png")
    Image.new("RGB", (2, 2), (9, 99, 199)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    rgba.save(tmp_path / "a.png")
    assert grey(load_image(str(tmp_path / "l.png"))) == [[77, 77], [77, 77]]
    assert np.asarray(load_image(str(tmp_path / "p.png")))[0, 0].tolist() == [9, 99, 199]
    assert np.asarray(load_image(str(tmp_path / "a.png"))).tolist() == [[[255, 255, 255], [10, 20, 30]]]


# -- duplicates --------------------------------------------------------------------------------------------


def test_dedup_keys_match_identical_images_across_paths_and_bytes(tmp_path):
    a = png(tmp_path / "a.png", (5, 5, 5))
    shutil.copy(a, tmp_path / "copy.png")
    png(tmp_path / "other.png", (6, 6, 6))
    ex = ImageExamples(
        "t",
        [str(a), str(tmp_path / "copy.png"), str(tmp_path / "other.png"), a.read_bytes()],
        None,
        ["a", "copy", "other", "bytes"],
        [],
    )
    k = ex.dedup_keys()
    assert k[0] == k[1] == k[3] and k[2] != k[0]
