"""Lazy image-folder dataset and CelebA layout, on a few PNG/JPG files written with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lebm.data import FolderPreprocess, ImageFolderDataset, celeba_dataset, list_image_files


def coordinate_image(width: int, height: int) -> np.ndarray:
    """RGB image whose red channel is the column and green channel the row (so crops are checkable)."""
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([columns, rows, np.full_like(rows, 77)], axis=-1).astype(np.uint8)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """root/b.png, root/a/c.jpg, root/a/d.PNG, plus files that must be ignored."""
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    Image.fromarray(coordinate_image(40, 30)).save(root / "b.png")
    Image.fromarray(coordinate_image(40, 30)).save(root / "a" / "c.jpg", quality=95)
    Image.fromarray(coordinate_image(40, 30)).save(root / "a" / "d.PNG")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(coordinate_image(4, 4)).save(root / ".hidden.png")
    return root


def test_listing_is_recursive_sorted_and_filters_extensions(image_tree: Path) -> None:
    names = [path.relative_to(image_tree).as_posix() for path in list_image_files(image_tree)]
    assert names == ["a/c.jpg", "a/d.PNG", "b.png"]


def test_png_round_trips_exactly_with_label_minus_one(image_tree: Path) -> None:
    dataset = ImageFolderDataset(image_tree)
    assert len(dataset) == 3
    image, label = dataset[2]  # b.png
    assert label == -1
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), coordinate_image(40, 30))


def test_jpg_is_read_close_to_original(image_tree: Path) -> None:
    image, _ = ImageFolderDataset(image_tree)[0]  # a/c.jpg (lossy)
    difference = image.permute(1, 2, 0).to(torch.int32) - torch.from_numpy(coordinate_image(40, 30)).to(torch.int32)
    assert difference.abs().float().mean() < 3.0


def test_center_crop_takes_the_middle_square(image_tree: Path) -> None:
    image, _ = ImageFolderDataset(image_tree, center_crop=20)[2]
    assert image.shape == (3, 20, 20)
    assert image[0, 0, 0] == 10 and image[1, 0, 0] == 5  # left = (40-20)//2, top = (30-20)//2
    assert image[0, -1, -1] == 29 and image[1, -1, -1] == 24


def test_crop_box_then_resize(image_tree: Path) -> None:
    dataset = ImageFolderDataset(image_tree, crop_box=(8, 4, 24, 20), image_size=8)
    image, _ = dataset[2]
    assert image.shape == (3, 8, 8)
    cropped = coordinate_image(40, 30)[4:20, 8:24].astype(np.float64)
    # a 2x bilinear (antialiased) downscale of a linear ramp keeps the mean and the ramp direction
    assert abs(image[0].double().mean().item() - cropped[..., 0].mean()) < 1.0
    assert bool((image[0, :, 1:] > image[0, :, :-1]).all()) and bool((image[1, 1:, :] > image[1, :-1, :]).all())
    assert bool((image[2] == 77).all())


def test_center_crop_plus_resize_and_grey(image_tree: Path) -> None:
    dataset = ImageFolderDataset(image_tree, center_crop=24, image_size=12, channels=1)
    image, _ = dataset[2]
    assert image.shape == (1, 12, 12)
    grey = np.asarray(Image.fromarray(coordinate_image(40, 30)).convert("L")).astype(np.float64)
    assert abs(image.double().mean().item() - grey[3:27, 8:32].mean()) < 1.5


def test_center_crop_larger_than_image_raises(image_tree: Path) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ImageFolderDataset(image_tree, center_crop=35)[0]


def test_limit_keeps_first_sorted_files(image_tree: Path) -> None:
    dataset = ImageFolderDataset(image_tree, limit=2)
    assert [path.name for path in dataset.files] == ["c.jpg", "d.PNG"]


def test_missing_and_empty_folders_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="jpg"):
        ImageFolderDataset(tmp_path / "empty")


def write_faces(folder: Path, count: int) -> None:
    """CelebA-sized 178x218 JPGs: one colour inside the central 140x140 box, another outside."""
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[:] = (250, 0, 0)
        pixels[39:179, 19:159] = (0, 0, 200)  # rows (218-140)//2.., columns (178-140)//2..
        Image.fromarray(pixels).save(folder / f"{index + 1:06d}.jpg", quality=95)


@pytest.mark.parametrize("layout", ["img_align_celeba", "celeba/img_align_celeba"])
def test_celeba_default_crop_and_size(tmp_path: Path, layout: str) -> None:
    write_faces(tmp_path / layout, 3)
    dataset = celeba_dataset(tmp_path)
    assert len(dataset) == 3
    image, label = dataset[0]
    assert label == -1 and image.shape == (3, 64, 64) and image.dtype == torch.uint8
    # only the central 140x140 box (blue) survives the default crop; edges may blur by a pixel
    interior = image[:, 2:-2, 2:-2].int()
    assert int(interior[0].max()) < 30 and int(interior[2].min()) > 170
    assert [path.name for path in celeba_dataset(tmp_path, limit=2).files] == ["000001.jpg", "000002.jpg"]


def test_celeba_missing_says_download_by_hand(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        celeba_dataset(tmp_path)
    assert str(tmp_path / "img_align_celeba") in str(info.value)
    assert "by hand" in str(info.value)


# ------------------------------------------------------------------ resize_shorter_side (FolderPreprocess)
def horizontal_gradient(width: int, height: int) -> np.ndarray:
    """RGB image whose red channel is 3 * column, green 50, blue 5 * row."""
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([3 * columns, np.full_like(columns, 50), 5 * rows], axis=-1).astype(np.uint8)


def test_resize_shorter_side_then_center_crop_is_the_middle_of_the_resized_image() -> None:
    image = Image.fromarray(horizontal_gradient(80, 40))
    out = np.asarray(FolderPreprocess(resize_shorter_side=20, center_crop=20)(image)).astype(np.float64)
    assert out.shape == (20, 20, 3)
    # resized to 40x20 (columns halved): column j holds ~3 * (2j + 0.5); the centre crop keeps j = 10..29
    expected_red = 3 * (2 * (10 + np.arange(20)) + 0.5)
    assert np.abs(out[:, :, 0] - expected_red[None, :]).max() <= 1.0
    assert bool((out[:, :, 1] == 50).all())


def test_resize_shorter_side_and_center_crop_match_torchvision() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    for width, height in ((80, 40), (33, 70)):
        image = Image.fromarray(horizontal_gradient(width, height))
        ours = FolderPreprocess(resize_shorter_side=16, center_crop=16)(image)
        theirs = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])(image)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_preprocess_order_and_output_size() -> None:
    steps = FolderPreprocess(crop_box=(0, 0, 60, 30), resize_shorter_side=10)
    assert steps.output_size(None) == (20, 10)  # box 60x30 -> shorter side 10 -> 20x10
    image = steps(Image.fromarray(horizontal_gradient(80, 40)))
    assert image.size == (20, 10)
    red = np.asarray(image)[:, :, 0].astype(np.float64)
    assert abs(red.mean() - 3 * 29.5) < 1.5  # the mean of columns 0..59 only: the box came first
    assert FolderPreprocess(resize_shorter_side=10).output_size(None) is None
    assert FolderPreprocess(resize_shorter_side=10).output_size((33, 70)) == (10, 21)
    assert FolderPreprocess(resize_shorter_side=10, center_crop=8, image_size=4).output_size(None) == (4, 4)


def test_dataset_applies_resize_shorter_side(tmp_path: Path) -> None:
    Image.fromarray(horizontal_gradient(80, 40)).save(tmp_path / "wide.png")
    dataset = ImageFolderDataset(tmp_path, resize_shorter_side=20, center_crop=20)
    image, _ = dataset[0]
    assert image.shape == (3, 20, 20) and dataset.resize_shorter_side == 20
    expected_red = torch.tensor(3 * (2 * (10 + np.arange(20)) + 0.5))
    assert (image[0].double() - expected_red[None, :]).abs().max() <= 1.0


def test_bad_preprocess_options_are_named() -> None:
    with pytest.raises(ValueError, match="resize_shorter_side"):
        FolderPreprocess(resize_shorter_side=0)
    with pytest.raises(ValueError, match="crop_box"):
        FolderPreprocess(crop_box=(5, 5, 5, 9))
