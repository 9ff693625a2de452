"""Training side of the image-detector: augmentation, TTFNet targets on the stride-16 grid, torch threads,
and the head's losses (focal + GIoU) and training loop.

Split out of :mod:`labelpilot.models.vision.detector` (issue #12), which keeps the family class; torch is
passed in (never imported here at module level: serving a saved model needs no torch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from labelpilot.data.types import Example
from labelpilot.errors import LabelpilotError
from labelpilot.imaging import open_image, to_array
from labelpilot.models.base import Progress
from labelpilot.models.vision.inputs import annotated_images

STRIDE = 16


def augment(
    img: Image.Image, boxes: np.ndarray, rng: np.random.Generator, size: int, mode: str = "random"
) -> tuple[Image.Image, np.ndarray]:
    """One training variant: ``(size x size image, boxes)``. ``boxes``: (n, 5) relative x1, y1, x2, y2, class.

    ``mode``: ``plain``, ``mirror`` or ``random`` (crop or zoom-out, random mirror, colour jitter).
    """
    b = boxes.astype(np.float32).copy()
    mirror = mode == "mirror"
    if mode == "random":
        r = rng.random()
        width, height = img.size
        if r < 0.45:
            for _ in range(20):
                s = rng.uniform(0.45, 1.0)
                ar = rng.uniform(0.7, 1.4)
                cw, ch = min(1.0, s * math.sqrt(ar)), min(1.0, s / math.sqrt(ar))
                cx, cy = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch)
                nb = b.copy()
                nb[:, [0, 2]] = np.clip((nb[:, [0, 2]] - cx) / cw, 0, 1)
                nb[:, [1, 3]] = np.clip((nb[:, [1, 3]] - cy) / ch, 0, 1)
                before = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                after = (nb[:, 2] - nb[:, 0]) * (nb[:, 3] - nb[:, 1]) * cw * ch
                keep = after > 0.5 * before
                partial = (after > 0) & ~keep  # a box cut in half would teach wrong edges: try again
                if not partial.any() and (keep.any() or len(b) == 0):
                    box = (int(cx * width), int(cy * height), max(int(cx * width) + 1, int((cx + cw) * width)),
                           max(int(cy * height) + 1, int((cy + ch) * height)))
                    img = img.crop(box)
                    b = nb[keep]
                    break
        elif r < 0.7:
            z = rng.uniform(1.1, 1.8)
            nw, nh = int(width * z), int(height * z)
            ox, oy = int(rng.integers(0, nw - width + 1)), int(rng.integers(0, nh - height + 1))
            fill = tuple(int(v) for v in rng.integers(90, 170, 3))
            canvas = Image.new("RGB", (nw, nh), fill)  # type: ignore[arg-type]
            canvas.paste(img, (ox, oy))
            img = canvas
            b[:, [0, 2]] = (b[:, [0, 2]] * width + ox) / nw
            b[:, [1, 3]] = (b[:, [1, 3]] * height + oy) / nh
        mirror = rng.random() < 0.5
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x1 = 1.0 - b[:, 2]
        b[:, 2] = 1.0 - b[:, 0]
        b[:, 0] = x1
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if mode == "random":
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhancer(img).enhance(float(rng.uniform(0.7, 1.3)))
    return img, b


def make_targets(boxes: np.ndarray, n_classes: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TTFNet targets on the stride-16 grid: heatmap (C, H, W), box corners in pixels (4, H, W), weights (H, W)."""
    g = size // STRIDE
    heat = np.zeros((n_classes, g, g), dtype=np.float32)
    reg = np.zeros((4, g, g), dtype=np.float32)
    weight = np.zeros((g, g), dtype=np.float32)
    if len(boxes) == 0:
        return heat, reg, weight
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # small boxes win
    ys, xs = np.mgrid[0:g, 0:g].astype(np.float32)
    for x1, y1, x2, y2, c in boxes[order]:
        w, h = (x2 - x1) * g, (y2 - y1) * g
        if w <= 0 or h <= 0:
            continue
        cx = min(int((x1 + x2) / 2 * g), g - 1)
        cy = min(int((y1 + y2) / 2 * g), g - 1)
        sx, sy = max(0.54 * w / 6, 0.3), max(0.54 * h / 6, 0.3)
        gauss = np.exp(-((xs - cx) ** 2 / (2 * sx * sx) + (ys - cy) ** 2 / (2 * sy * sy)))
        heat[int(c)] = np.maximum(heat[int(c)], gauss)
        inside = (xs + 0.5 >= x1 * g) & (xs + 0.5 <= x2 * g) & (ys + 0.5 >= y1 * g) & (ys + 0.5 <= y2 * g)
        mask = (gauss > 0.05) & inside
        if not mask.any():
            mask = np.zeros_like(inside)
            mask[cy, cx] = True
        wts = gauss * mask
        wts = wts / wts.sum() * math.log(max(w * h * STRIDE * STRIDE, 2.0))
        reg[:, mask] = np.array([x1 * size, y1 * size, x2 * size, y2 * size], dtype=np.float32)[:, None]
        weight[mask] = wts[mask]
    return heat, reg, weight


def collect_boxes(examples: Sequence[Example], known: list[str]) -> tuple[list[str], list[np.ndarray], list[str]]:
    """The training images, their usable boxes as (n, 5) relative x1, y1, x2, y2, label index into ``known``,
    and notes on what was left out (no image, no annotation, unknown labels, empty boxes)."""
    index = {k: i for i, k in enumerate(known)}
    paths: list[str] = []
    boxes: list[np.ndarray] = []
    skipped: list[str] = []
    for where, ex in annotated_images(examples, skipped):
        assert ex.image is not None and ex.target is not None
        rows = []
        for b in ex.target.boxes:
            if b.label not in index:
                skipped.append(f"{where}: box label {b.label!r} is not in the control (box ignored)")
                continue
            x1, y1 = min(max(b.x, 0.0), 1.0), min(max(b.y, 0.0), 1.0)
            x2, y2 = min(max(b.x + b.width, 0.0), 1.0), min(max(b.y + b.height, 0.0), 1.0)
            if x2 - x1 < 1e-4 or y2 - y1 < 1e-4:
                skipped.append(f"{where}: empty or out-of-image box ignored")
                continue
            rows.append((x1, y1, x2, y2, index[b.label]))
        if ex.target.boxes and not rows:  # not a negative: its boxes just could not be used
            skipped.append(f"{where}: none of its boxes is usable; example left out")
            continue
        paths.append(ex.image)
        boxes.append(np.array(rows, dtype=np.float32).reshape(-1, 5))
    return paths, boxes, skipped


def make_variants(
    taps: Any, paths: list[str], boxes: list[np.ndarray], n_classes: int, options: Mapping[str, Any],
    progress: Progress | None, total: int,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Backbone features (float16 ``c4``, ``c5``) and targets of every training variant of every image, and
    notes on images that could not be read."""
    size = int(options["image_size"])
    per_image = max(2, min(int(options["variants"]), int(options["max_variants"]) // max(1, len(paths))))
    rng = np.random.default_rng(int(options["seed"]))
    c4s, c5s, heats, regs, weights = [], [], [], [], []
    skipped: list[str] = []
    pending: list[np.ndarray] = []
    pending_targets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    done = 0

    def flush() -> None:
        if not pending:
            return
        c4, c5 = taps(np.stack(pending))
        c4s.append(c4.astype(np.float16))
        c5s.append(c5.astype(np.float16))
        for h, r, w in pending_targets:
            heats.append(h)
            regs.append(r)
            weights.append(w)
        pending.clear()
        pending_targets.clear()

    for path, bx in zip(paths, boxes, strict=True):
        try:
            img = open_image(path, max_pixels=int(options["max_pixels"]), min_side=size).image
        except LabelpilotError as exc:
            skipped.append(f"{os.path.basename(path)}: {exc.message}")
            done += per_image
            continue
        for k in range(per_image):
            mode = "plain" if k == 0 else "mirror" if k == 1 else "random"
            var_img, var_boxes = augment(img, bx, rng, size, mode)
            pending.append(to_array(var_img))
            pending_targets.append(make_targets(var_boxes, n_classes, size))
            if len(pending) >= 16:
                flush()
        img.close()
        done += per_image
        if progress is not None:
            progress(done, total, "detector features")
    flush()
    if not c4s:
        return {}, skipped
    data = {
        "c4": np.concatenate(c4s), "c5": np.concatenate(c5s),
        "heat": np.stack(heats), "reg": np.stack(regs), "weight": np.stack(weights),
    }
    return data, skipped


def train_head(
    torch: Any, head: Any, data: dict[str, np.ndarray], options: Mapping[str, Any], progress: Progress | None,
    n_var: int, total: int,
) -> tuple[list[float], int, float]:
    """Trains ``head`` (in train mode) on the variants' features ``data``: AdamW + one-cycle LR, focal loss on
    the heatmap + 5 x GIoU on the decoded boxes. Returns the mean loss per epoch, the number of variants and
    the seconds taken. ``progress`` counts on from ``n_var`` (the feature steps) up to ``total``."""
    epochs = max(1, int(options["epochs"]))
    bs = max(2, int(options["batch_size"]))
    c4 = torch.from_numpy(data["c4"])
    c5 = torch.from_numpy(data["c5"])
    heat = torch.from_numpy(data["heat"])
    reg = torch.from_numpy(data["reg"])
    weight = torch.from_numpy(data["weight"])
    n = len(c4)
    steps_per_epoch = math.ceil(n / bs)
    opt = torch.optim.AdamW(head.parameters(), lr=float(options["lr"]),
                            weight_decay=float(options["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(options["lr"]),
                                                total_steps=epochs * steps_per_epoch, pct_start=0.15)
    grid = _grid(torch, int(options["image_size"]))
    gen = torch.Generator().manual_seed(int(options["seed"]))
    losses = []
    t_head = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * bs : (step + 1) * bs]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            logits, ltrb = head(c4[idx].float(), c5[idx].float())
            loss = _focal_loss(torch, logits, heat[idx]) + 5.0 * _giou_loss(torch, _decode(torch, ltrb, grid),
                                                                               reg[idx], weight[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.item())
            if progress is not None:
                progress(n_var + epoch * steps_per_epoch + step + 1, total, f"detector epoch {epoch + 1}/{epochs}")
        losses.append(running / steps_per_epoch)
    return losses, n, time.perf_counter() - t_head


def train_threads() -> int:
    """Torch threads for training: ``$LABELPILOT_TORCH_THREADS``, else 1 when the cores are already busy
    (load average >= cores - 0.5: OpenMP threads then spin and one epoch took 9x longer), else up to 2."""
    env = os.environ.get("LABELPILOT_TORCH_THREADS")
    if env and env.isascii() and env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores - 0.5 else max(1, min(2, cores))


# ------------------------------------------------------------------------------ torch helpers


def _grid(torch: Any, size: int) -> tuple[Any, Any]:
    g = size // STRIDE
    ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij")
    return (xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE


def _decode(torch: Any, ltrb: Any, grid: tuple[Any, Any]) -> Any:
    cx, cy = grid
    return torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], dim=1)


def _focal_loss(torch: Any, logits: Any, target: Any) -> Any:
    """CenterNet's penalty-reduced pixel focal loss (alpha 2, beta 4), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def _giou_loss(torch: Any, pred: Any, target: Any, weight: Any) -> Any:
    mask = weight > 0
    if not bool(mask.any()):
        return pred.sum() * 0.0
    p = pred.permute(0, 2, 3, 1)[mask]
    t = target.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    ix1, iy1 = torch.max(p[:, 0], t[:, 0]), torch.max(p[:, 1], t[:, 1])
    ix2, iy2 = torch.min(p[:, 2], t[:, 2]), torch.min(p[:, 3], t[:, 3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    area_p = (p[:, 2] - p[:, 0]).clamp(min=0) * (p[:, 3] - p[:, 1]).clamp(min=0)
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    union = (area_p + area_t - inter).clamp(min=1e-6)
    iou = inter / union
    ex1, ey1 = torch.min(p[:, 0], t[:, 0]), torch.min(p[:, 1], t[:, 1])
    ex2, ey2 = torch.max(p[:, 2], t[:, 2]), torch.max(p[:, 3], t[:, 3])
    enclose = ((ex2 - ex1) * (ey2 - ey1)).clamp(min=1e-6)
    giou = iou - (enclose - union) / enclose
    return ((1 - giou) * w).sum() / w.sum().clamp(min=1e-6)
