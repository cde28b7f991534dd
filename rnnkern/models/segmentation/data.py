"""Segmentation data: seeded Fashion-MNIST composites (the embedded default), the nuclei image
(binary, real microscopy), and a user folder of images + masks.

Every loader returns a `SegData`: per split ("train", "val", "test") raw images (N, C, H, W)
float32 in [0, 1] and masks (N, H, W) int64 with labels in [0, num_classes) or 255 (ignore), plus
the per-channel mean/std of the training images that the trainer normalises with (and stores in
its checkpoints, so `predict` normalises a new image the same way).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
FASHION_NPZ = DATA_DIR / "fashion_mnist_subset.npz"
NUCLEI_NPZ = DATA_DIR / "nuclei2d.npz"
FASHION_CLASSES = ["background", "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Bad or missing segmentation data (the message names the file and what is wrong)."""


@dataclass
class SegData:
    name: str
    num_classes: int
    in_channels: int
    class_names: list[str]
    splits: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # a split that is another one's images (folder: test -> val)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {name!r} (has {', '.join(self.splits)})")
        return self.splits[name]

    def normalize(self, images: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def _finish(data: SegData) -> SegData:
    x = data.split("train")[0]
    data.mean = x.mean(dim=(0, 2, 3)).tolist()
    data.std = x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    for name, (img, mask) in data.splits.items():
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= data.num_classes))
        if bool(bad.any()):
            raise DataError(f"{data.name}/{name}: mask labels {mask[bad].unique().tolist()[:8]} outside "
                            f"[0, {data.num_classes}) and not {IGNORE_INDEX}")
    return data


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST composites
def _fashion_split(pool_x: np.ndarray, pool_y: np.ndarray, n: int, rng: np.random.Generator, size: int,
                   max_items: int, threshold: int, noise: float) -> tuple[Tensor, Tensor]:
    imgs = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int64)
    s = pool_x.shape[-1]
    for i in range(n):
        for _ in range(int(rng.integers(1, max_items + 1))):
            j = int(rng.integers(len(pool_x)))
            item = pool_x[j]
            if rng.random() < 0.5:
                item = item[:, ::-1]
            r, c = (int(v) for v in rng.integers(0, size - s + 1, size=2))
            m = item > threshold  # later items occlude earlier ones
            imgs[i, r:r + s, c:c + s][m] = item[m] / 255.0
            masks[i, r:r + s, c:c + s][m] = int(pool_y[j]) + 1
    if noise > 0:
        imgs = np.clip(imgs + rng.normal(0.0, noise, imgs.shape).astype(np.float32), 0.0, 1.0)
    return torch.from_numpy(imgs).unsqueeze(1), torch.from_numpy(masks)


def fashion_composites(seed: int = 0, train_size: int = 2000, val_size: int = 500, test_size: int = 500,
                       size: int = 64, max_items: int = 3, threshold: int = 40, noise: float = 0.03,
                       npz: Path = FASHION_NPZ) -> SegData:
    """size x size canvases with 1..max_items Fashion-MNIST items pasted at random places (random
    horizontal flips); pixels of an item above `threshold` get its class + 1, the rest background
    (0): 11 classes. train/val draw from disjoint halves of a fixed split of the train images
    (5000 / 1000), test from the separate test images. Same seed, same data."""
    if not Path(npz).is_file():
        raise DataError(f"Fashion-MNIST subset not found at {npz}")
    if size < 28:
        raise DataError(f"fashion composites need size >= 28, got {size}")
    with np.load(npz) as d:
        tx, ty, sx, sy = d["train_images"], d["train_labels"], d["test_images"], d["test_labels"]
    perm = np.random.default_rng(12345).permutation(len(tx))  # fixed, seed-independent pool split
    val_idx, train_idx = perm[:1000], perm[1000:]
    data = SegData("fashion", 11, 1, list(FASHION_CLASSES))
    for k, (name, px, py, n) in enumerate([("train", tx[train_idx], ty[train_idx], train_size),
                                           ("val", tx[val_idx], ty[val_idx], val_size),
                                           ("test", sx, sy, test_size)]):
        rng = np.random.default_rng([seed, k])
        data.splits[name] = _fashion_split(px, py, n, rng, size, max_items, threshold, noise)
    return _finish(data)


# ----------------------------------------------------------------------------------------------
# nuclei
def nuclei(seed: int = 0, train_size: int = 512, tile: int = 64, npz: Path = NUCLEI_NPZ) -> SegData:
    """Binary nuclei segmentation (0 background, 1 nucleus) from one 512x512 fluorescence image.
    Rows [0, 320) give `train_size` random tiles with random flips / 90-degree rotations (seeded);
    rows [320, 416) the val tiles and [416, 512) the test tiles (a fixed grid, stride tile/2), so
    the splits never share pixels."""
    if not Path(npz).is_file():
        raise DataError(f"nuclei image not found at {npz}")
    with np.load(npz) as d:
        img, inst = d["image"].astype(np.float32), d["instance_mask"]
    lo, hi = np.percentile(img, 1.0), np.percentile(img, 99.8)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    mask = (inst > 0).astype(np.int64)
    rng = np.random.default_rng([seed, 7])
    h, w = img.shape
    xs, ys = [], []
    for _ in range(train_size):
        r, c = int(rng.integers(0, 320 - tile + 1)), int(rng.integers(0, w - tile + 1))
        a, b = img[r:r + tile, c:c + tile], mask[r:r + tile, c:c + tile]
        k = int(rng.integers(4))
        a, b = np.rot90(a, k), np.rot90(b, k)
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        xs.append(a.copy())
        ys.append(b.copy())
    data = SegData("nuclei", 2, 1, ["background", "nucleus"])
    data.splits["train"] = (torch.from_numpy(np.stack(xs)).unsqueeze(1), torch.from_numpy(np.stack(ys)))

    def grid(r0: int, r1: int) -> tuple[Tensor, Tensor]:
        gx, gy = [], []
        for r in range(r0, r1 - tile + 1, tile // 2):
            for c in range(0, w - tile + 1, tile // 2):
                gx.append(img[r:r + tile, c:c + tile])
                gy.append(mask[r:r + tile, c:c + tile])
        return torch.from_numpy(np.stack(gx)).unsqueeze(1), torch.from_numpy(np.stack(gy))

    data.splits["val"] = grid(320, 416)
    data.splits["test"] = grid(416, h)
    return _finish(data)


# ----------------------------------------------------------------------------------------------
# image files
def _voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map (bit-interleaved label -> RGB); entry 255 is (224, 224, 192)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


VOC_PALETTE = _voc_palette()


def _have_pil() -> bool:
    try:
        import PIL.Image  # noqa: F401
        return True
    except ImportError:
        return False


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Image file -> float32 (H, W, C) in [0, 1], C = 1 (grey) or 3 (RGB; alpha dropped).
    Pillow when installed, else matplotlib's reader."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        if _have_pil():
            from PIL import Image
            with Image.open(path) as im:
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    a = np.asarray(im, dtype=np.float32)
                    a = a / (65535.0 if a.max() > 255 else 255.0)
                elif im.mode in ("L", "1", "LA"):
                    a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
                else:
                    a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        else:
            import matplotlib.image as mpimg
            a = np.asarray(mpimg.imread(str(path)))
            a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
            if a.ndim == 3 and a.shape[2] == 4:
                a = a[..., :3]
    except DataError:
        raise
    except Exception as e:  # truncated / not an image
        raise DataError(f"cannot read image {path}: {e}") from e
    if a.ndim == 2:
        a = a[..., None]
    return np.ascontiguousarray(a)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Mask file -> int64 (H, W) labels. Palette ('P') and greyscale PNGs give their indices;
    RGB masks are mapped through the VOC colour map (unknown colours are an error). 255 = ignore."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask not found: {path}")
    try:
        if _have_pil():
            from PIL import Image
            with Image.open(path) as im:
                if im.mode in ("P", "L", "I", "I;16", "1"):
                    return np.asarray(im, dtype=np.int64)
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        else:
            import matplotlib.image as mpimg
            a = np.asarray(mpimg.imread(str(path)))
            if a.dtype != np.uint8:
                a = np.rint(a * 255).astype(np.uint8)
            if a.ndim == 2:
                return a.astype(np.int64)
            a = a[..., :3]
    except Exception as e:
        raise DataError(f"cannot read mask {path}: {e}") from e
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        return a[..., 0].astype(np.int64)  # grey stored as RGB
    key = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
    pal_key = (VOC_PALETTE[:, 0].astype(np.int64) << 16) | (VOC_PALETTE[:, 1].astype(np.int64) << 8) | VOC_PALETTE[:, 2]
    lut = {int(k): i for i, k in enumerate(pal_key)}
    uniq, inv = np.unique(key, return_inverse=True)
    labels = []
    for u in uniq:
        if int(u) not in lut:
            raise DataError(f"mask {path}: colour {((u >> 16) & 255, (u >> 8) & 255, u & 255)} is not in the "
                            "VOC palette; save masks as palette/greyscale PNGs of class indices")
        labels.append(lut[int(u)])
    return np.asarray(labels, np.int64)[inv].reshape(a.shape[:2])


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write (H, W, 3) uint8 (or (H, W) uint8) to a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _have_pil():
        from PIL import Image
        Image.fromarray(np.ascontiguousarray(rgb)).save(path)
    else:
        import matplotlib.pyplot as plt
        plt.imsave(path, rgb, cmap="gray" if rgb.ndim == 2 else None)
    return path


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write (H, W) labels as a VOC palette PNG (Pillow) or an RGB PNG in the VOC colours."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).astype(np.uint8)
    if _have_pil():
        from PIL import Image
        im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
        im.putpalette(VOC_PALETTE.reshape(-1).tolist())
        im.save(path)
    else:
        write_png(path, VOC_PALETTE[labels])
    return path


def _resize(img: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return img.clamp(0, 1), mask


def _pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    if not images_dir.is_dir():
        raise DataError(f"no images directory {images_dir}")
    if not masks_dir.is_dir():
        raise DataError(f"no masks directory {masks_dir}")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {images_dir}")
    pairs = []
    for p in images:
        m = masks_dir / (p.stem + ".png")
        if not m.is_file():
            raise DataError(f"image {p} has no mask {m}")
        pairs.append((p, m))
    return pairs


def image_folder(root: str | os.PathLike, num_classes: Optional[int] = None, image_size: Optional[int] = None,
                 class_names: Optional[list[str]] = None) -> SegData:
    """A folder of images + masks: root/images/NAME.{png,jpg,...} with root/masks/NAME.png, or the
    same under root/train/ and root/val/ (and optionally root/test/). Without train/val folders the
    pairs are split 80/20 (fixed shuffle). Masks hold class indices (palette or greyscale PNG, or
    RGB in the VOC colours), 255 = ignore; num_classes defaults to the largest label + 1. Images of
    different sizes are all resized to image_size (default: the first image's size)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root} (use 'fashion', 'nuclei' or a folder with images/ and "
                        "masks/)")
    if (root / "train").is_dir():
        split_pairs = {"train": _pairs(root / "train" / "images", root / "train" / "masks")}
        for s in ("val", "test"):
            if (root / s).is_dir():
                split_pairs[s] = _pairs(root / s / "images", root / s / "masks")
        if "val" not in split_pairs:
            raise DataError(f"{root} has train/ but no val/")
    else:
        pairs = _pairs(root / "images", root / "masks")
        if len(pairs) < 2:
            raise DataError(f"{root}: need at least 2 image/mask pairs to split into train and val")
        order = np.random.default_rng(0).permutation(len(pairs))
        n_val = max(1, len(pairs) // 5)
        split_pairs = {"train": [pairs[i] for i in order[n_val:]], "val": [pairs[i] for i in order[:n_val]]}
    aliases = {} if "test" in split_pairs else {"test": "val"}
    split_pairs.setdefault("test", split_pairs["val"])
    loaded: dict[str, list[tuple[Tensor, Tensor]]] = {}
    channels = None
    for s, pairs in split_pairs.items():
        items = []
        for ip, mp in pairs:
            img = torch.from_numpy(read_image(ip)).permute(2, 0, 1).contiguous()
            mask = torch.from_numpy(read_mask(mp))
            if img.shape[1:] != mask.shape:
                raise DataError(f"image {ip} is {tuple(img.shape[1:])} but its mask {mp} is {tuple(mask.shape)}")
            if channels is None:
                channels = img.shape[0]
            elif img.shape[0] != channels:
                raise DataError(f"image {ip} has {img.shape[0]} channel(s), the others {channels}")
            valid = mask[mask != IGNORE_INDEX]
            if num_classes is not None and valid.numel() and (int(valid.max()) >= num_classes or int(valid.min()) < 0):
                raise DataError(f"mask {mp}: labels {sorted(set(valid.unique().tolist()) - set(range(num_classes)))} "
                                f"outside [0, {num_classes}) and not {IGNORE_INDEX} (ignore)")
            items.append((img, mask))
        loaded[s] = items
    if num_classes is None:
        labels = [int(m[m != IGNORE_INDEX].max()) for items in loaded.values() for _, m in items
                  if bool((m != IGNORE_INDEX).any())]
        num_classes = max(max(labels, default=0) + 1, 2)
    size = image_size
    shapes = {tuple(m.shape) for items in loaded.values() for _, m in items}
    if size is None and len(shapes) > 1:
        size = max(loaded["train"][0][1].shape)
    names = class_names or [f"class {i}" for i in range(num_classes)]
    data = SegData(root.name or str(root), num_classes, channels, names, aliases=aliases)
    for s, items in loaded.items():
        if size is not None:
            items = [_resize(i, m, size) for i, m in items]
        data.splits[s] = (torch.stack([i for i, _ in items]), torch.stack([m for _, m in items]))
    return _finish(data)


def load_dataset(spec: str, seed: int = 0, train_size: Optional[int] = None, val_size: Optional[int] = None,
                 num_classes: Optional[int] = None, image_size: Optional[int] = None) -> SegData:
    """'fashion' | 'nuclei' | a folder path."""
    if spec == "fashion":
        kw = {}
        if train_size is not None:
            kw["train_size"] = train_size
        if val_size is not None:
            kw["val_size"] = kw["test_size"] = val_size
        return fashion_composites(seed=seed, **kw)
    if spec == "nuclei":
        return nuclei(seed=seed, **({"train_size": train_size} if train_size is not None else {}))
    return image_folder(spec, num_classes=num_classes, image_size=image_size)
