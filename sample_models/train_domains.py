"""Deterministically train eqaudit's sample models for the other domains and write their data, sidecars and a check.

Run from anywhere:  python sample_models/train_domains.py   (CPU, one thread, a few minutes)

Writes into the folder of this file:
  shapes3d_test.npz      point clouds (N, 128, 3) of five synthetic shapes, labels and class names
  pointnet.pt            PointNet trained on shapes in their canonical orientation (not rotation-invariant)
  pointnet_aug.pt        the same architecture trained with Haar-random 3-D rotations
  piv_test.npz           two-frame particle images (N, 2, 32, 32) and their true flows (N, 2, 32, 32)
  piv_flow.pt            FlowNet, a small CNN flow estimator (vector-field task, d4*swap)
  canvas_boxes_test.npz  canvases (N, 1, 32, 32) with one shape each, labels, classes and true boxes
  box_localiser.pt       BoxNet, one box + 3 class scores per canvas (boxes task, translate)
and a sidecar NAME.eqaudit.toml for each model, then audits every model with eqaudit and prints the
numbers that sample_models/README.md quotes. Architectures are in domain_models.py.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from domain_models import SHAPES2D, SHAPES3D, BoxNet, FlowNet, PointNet  # noqa: E402

SEED = 0
POINTS = 128
SIZE = 32


def set_determinism(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def cosine_adam(model: torch.nn.Module, lr: float, steps: int):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    return opt, sched


# --------------------------------------------------------------------------- point clouds


def _surface(kind: int, n: int, g: np.random.Generator) -> np.ndarray:
    """n points on the surface of one shape in its canonical pose (axis along z), before normalisation."""
    if kind == 0:  # sphere
        p = g.normal(size=(n, 3))
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    if kind == 1:  # box with a random aspect: faces chosen by area
        half = g.uniform(0.5, 1.0, 3)
        areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]] * 2)
        face = g.choice(6, size=n, p=areas / areas.sum())
        p = g.uniform(-1, 1, (n, 3)) * half
        axis, sign = face % 3, np.where(face < 3, 1.0, -1.0)
        p[np.arange(n), axis] = sign * half[axis]
        return p
    if kind == 2:  # cylinder, radius 0.6, height 2: side and caps by area
        r, h = 0.6, 1.0
        side = g.uniform(size=n) < (2 * math.pi * r * 2 * h) / (2 * math.pi * r * 2 * h + 2 * math.pi * r * r)
        t = g.uniform(0, 2 * math.pi, n)
        rad = np.where(side, r, r * np.sqrt(g.uniform(size=n)))
        z = np.where(side, g.uniform(-h, h, n), np.where(g.uniform(size=n) < 0.5, -h, h))
        return np.stack([rad * np.cos(t), rad * np.sin(t), z], 1)
    if kind == 3:  # cone, apex up, base radius 0.8 at z = -0.8, height 1.8
        r, h = 0.8, 1.8
        slant = math.sqrt(r * r + h * h)
        side = g.uniform(size=n) < (math.pi * r * slant) / (math.pi * r * slant + math.pi * r * r)
        t = g.uniform(0, 2 * math.pi, n)
        s = np.sqrt(g.uniform(size=n))  # uniform on the lateral surface: radius grows linearly from the apex
        rad = np.where(side, r * s, r * np.sqrt(g.uniform(size=n)))
        z = np.where(side, 1.0 - h * s, 1.0 - h)
        return np.stack([rad * np.cos(t), rad * np.sin(t), z], 1)
    # torus in the xy-plane, R = 1, r = 0.35
    u, v = g.uniform(0, 2 * math.pi, n), g.uniform(0, 2 * math.pi, n)
    big, small = 1.0, 0.35
    return np.stack([(big + small * np.cos(v)) * np.cos(u), (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)], 1)


def make_clouds(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 3) float32 clouds (centred, max radius 1, per-axis jitter of +-15 %, noise 0.01) and labels (N,)."""
    g = np.random.default_rng(seed)
    xs, ys = [], []
    for kind in range(len(SHAPES3D)):
        for _ in range(n_per_class):
            p = _surface(kind, POINTS, g) * g.uniform(0.85, 1.15, 3) + g.normal(scale=0.01, size=(POINTS, 3))
            p = p - p.mean(0)
            xs.append(p / np.linalg.norm(p, axis=1).max())
            ys.append(kind)
    order = g.permutation(len(ys))
    return np.stack(xs)[order].astype(np.float32), np.array(ys, dtype=np.int64)[order]


def random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) Haar-random rotations (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=gen)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def train_pointnet(x: torch.Tensor, y: torch.Tensor, augment: bool, epochs: int = 40) -> PointNet:
    set_determinism(SEED)
    model = PointNet()
    gen = torch.Generator().manual_seed(SEED + 1)
    steps = epochs * math.ceil(len(y) / 64)
    opt, sched = cosine_adam(model, 3e-3, steps)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i : i + 64]
            xb = x[idx]
            if augment:
                xb = xb @ random_rotations(len(idx), gen).transpose(1, 2)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


# --------------------------------------------------------------------------- particle images (PIV)


def flow_at(kind: np.ndarray, prm: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow (u right, v down) in pixels at positions x, y (N, M) for each sample's family and parameters (N, 4)."""
    c = (SIZE - 1) / 2
    cx, cy = x - c, y - c
    k = kind[:, None]
    a, b, d, e = (prm[:, i : i + 1] for i in range(4))
    # uniform: (a, b); rotation: rate a (rad per frame); shear: rate a along direction b (rad);
    # vortex (Lamb-Oseen): circulation a, core radius b, centre offset (d, e)
    u = np.zeros_like(x)
    v = np.zeros_like(x)
    u = np.where(k == 0, a, u)
    v = np.where(k == 0, b, v)
    u = np.where(k == 1, -a * cy, u)
    v = np.where(k == 1, a * cx, v)
    dx, dy = np.cos(b), np.sin(b)
    along = -dy * cx + dx * cy  # coordinate across the shear direction
    u = np.where(k == 2, a * along * dx, u)
    v = np.where(k == 2, a * along * dy, v)
    rx, ry = cx - d, cy - e
    r2 = rx * rx + ry * ry + 1e-9
    core = np.where(k == 3, b, 1.0)  # the core radius only means something for vortices
    ut = a / (2 * math.pi * r2) * (1 - np.exp(-r2 / (core * core)))
    u = np.where(k == 3, -ut * ry, u)
    v = np.where(k == 3, ut * rx, v)
    return u, v


def make_piv(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 32, 32) float32 particle-image pairs (frames at t = -1/2 and +1/2) and true flows (N, 2, 32, 32)."""
    g = np.random.default_rng(seed)
    kind = g.integers(0, 4, n)
    prm = np.zeros((n, 4))
    prm[kind == 0, :2] = g.uniform(-2, 2, ((kind == 0).sum(), 2))
    prm[kind == 1, 0] = g.uniform(-0.12, 0.12, (kind == 1).sum())
    prm[kind == 2, 0] = g.uniform(-0.12, 0.12, (kind == 2).sum())
    prm[kind == 2, 1] = g.uniform(0, 2 * math.pi, (kind == 2).sum())
    m3 = kind == 3
    prm[m3, 0] = g.choice([-1, 1], m3.sum()) * g.uniform(15, 45, m3.sum())
    prm[m3, 1] = g.uniform(3, 6, m3.sum())
    prm[m3, 2:] = g.uniform(-6, 6, (m3.sum(), 2))
    n_part = 170
    px = g.uniform(-5, SIZE + 4, (n, n_part))
    py = g.uniform(-5, SIZE + 4, (n, n_part))
    amp = g.uniform(0.5, 1.0, (n, n_part))
    sig = g.uniform(0.7, 1.1, (n, n_part))
    pu, pv = flow_at(kind, prm, px, py)
    grid = np.arange(SIZE, dtype=np.float64)
    frames = []
    for sgn in (-0.5, 0.5):
        fx, fy = px + sgn * pu, py + sgn * pv
        ex = np.exp(-((grid[None, None, :] - fx[..., None]) ** 2) / (2 * sig[..., None] ** 2))  # (N, P, W)
        ey = np.exp(-((grid[None, None, :] - fy[..., None]) ** 2) / (2 * sig[..., None] ** 2))  # (N, P, H)
        img = np.einsum("np,nph,npw->nhw", amp, ey, ex)
        frames.append(np.clip(img, 0, 1.5))
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    fu, fv = flow_at(kind, prm, np.broadcast_to(xx.ravel(), (n, SIZE * SIZE)), np.broadcast_to(yy.ravel(), (n, SIZE * SIZE)))
    flow = np.stack([fu.reshape(n, SIZE, SIZE), fv.reshape(n, SIZE, SIZE)], 1)
    return np.stack(frames, 1).astype(np.float32), flow.astype(np.float32)


def train_flow(x: torch.Tensor, f: torch.Tensor, epochs: int = 30) -> FlowNet:
    set_determinism(SEED)
    model = FlowNet()
    gen = torch.Generator().manual_seed(SEED + 2)
    bs = 32
    opt, sched = cosine_adam(model, 2e-3, epochs * math.ceil(len(x) / bs))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            loss = (model(x[idx]) - f[idx]).norm(dim=1).mean()  # end-point error
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


# --------------------------------------------------------------------------- boxes


def make_canvases(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 1, 32, 32) float32 canvases with one filled shape each, labels (N,), boxes (N, 4) (x1, y1, x2, y2);
    every box keeps at least 4 pixels from the border (so shifts up to 4 px keep the shape in the frame)."""
    g = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing="ij")  # pixel centres (row, col)
    xs, ys, boxes = [], [], []
    while len(ys) < n:
        kind = int(g.integers(0, 3))
        s = g.uniform(7, 13)
        cx, cy = g.uniform(4 + s / 2, SIZE - 4 - s / 2, 2)
        if kind == 0:
            m = (np.abs(jj - cx) <= s / 2) & (np.abs(ii - cy) <= s / 2)
        elif kind == 1:
            m = (jj - cx) ** 2 + (ii - cy) ** 2 <= (s / 2) ** 2
        else:  # apex up: width grows linearly from the apex to the base
            top = cy - s / 2
            frac = (ii - top) / s
            m = (frac >= 0) & (frac <= 1) & (np.abs(jj - cx) <= frac * s / 2)
        rows, cols = np.nonzero(m)
        box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        if box[0] < 4 or box[1] < 4 or box[2] > SIZE - 4 or box[3] > SIZE - 4 or m.sum() < 12:
            continue
        xs.append(m.astype(np.float32)[None])
        ys.append(kind)
        boxes.append(box)
    return np.stack(xs), np.array(ys, dtype=np.int64), np.array(boxes, dtype=np.float32)


def train_boxes(x: torch.Tensor, y: torch.Tensor, b: torch.Tensor, epochs: int = 30) -> BoxNet:
    set_determinism(SEED)
    model = BoxNet()
    gen = torch.Generator().manual_seed(SEED + 3)
    bs = 64
    opt, sched = cosine_adam(model, 3e-3, epochs * math.ceil(len(x) / bs))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            out = model(x[idx])
            loss = 10 * F.smooth_l1_loss(out[:, :4] / SIZE, b[idx] / SIZE, beta=0.02) + F.cross_entropy(out[:, 4:], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area = lambda t: (t[:, 2] - t[:, 0]).clamp_min(0) * (t[:, 3] - t[:, 1]).clamp_min(0)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# --------------------------------------------------------------------------- files


SIDECARS = {
    "pointnet": (
        "PointNet trained on canonically oriented shapes: order-invariant by construction, not rotation-invariant",
        'model_factory = "domain_models:PointNet"\ndata = "shapes3d_test.npz"\ntask = "classify"\n'
        'symmetry = ["so3:n=32", "rotate-z:step=30", "permute:n=8"]\n',
    ),
    "pointnet_aug": (
        "PointNet trained with Haar-random 3-D rotations: approximately rotation-invariant",
        'model_factory = "domain_models:PointNet"\ndata = "shapes3d_test.npz"\ntask = "classify"\n'
        'symmetry = ["so3:n=32", "rotate-z:step=30", "permute:n=8"]\n',
    ),
    "piv_flow": (
        "FlowNet on two-frame particle images; flows turn with d4 and reverse when the frames are swapped",
        'model_factory = "domain_models:FlowNet"\ndata = "piv_test.npz"\ntask = "vector-field"\ntargets_key = "flow"\n'
        'symmetry = ["d4*swap", "translate:max=2,mode=zero"]\n',
    ),
    "box_localiser": (
        "BoxNet: one box (x1, y1, x2, y2 in pixels) and 3 class scores per canvas, declared as one (B, 7) output",
        'model_factory = "domain_models:BoxNet"\ndata = "canvas_boxes_test.npz"\ntask = "boxes"\ntargets_key = "boxes"\n'
        'symmetry = ["translate:max=4,mode=zero", "flip", "rot90"]\n',
    ),
}


def write_sidecars() -> None:
    for name, (what, body) in SIDECARS.items():
        text = (f"# eqaudit settings for {name}.pt (read by `eqaudit scan sample_models/{name}.pt`): {what}.\n"
                "# Paths are relative to this file's folder; written by train_domains.py.\n" + body)
        (HERE / f"{name}.eqaudit.toml").write_text(text)


def save_state(model: torch.nn.Module, name: str) -> None:
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, HERE / f"{name}.pt")


def audit(names: list[str]) -> None:
    """Run eqaudit on each model with its sidecar and print the headline numbers."""
    from eqaudit.api import scan

    for name in names:
        t0 = time.perf_counter()
        res = scan(HERE / f"{name}.pt", out=str(HERE.parent / "reports" / name), device="cpu", write=False)
        for s in res.symmetries:
            keys = [k for k in ("accuracy", "flip_rate", "prob_tv", "equivariance_error", "epe", "iou", "confidence", "level") if k in s.summary]
            shown = ", ".join(f"{k}={s.summary[k]:.4f}" for k in keys if s.summary[k] is not None)
            print(f"  {name:14s} {s.spec:28s} {shown}")
        print(f"  {name:14s} audit took {time.perf_counter() - t0:.1f} s")


def main() -> None:
    t_all = time.perf_counter()
    set_determinism(SEED)

    # point clouds
    t0 = time.perf_counter()
    xtr, ytr = make_clouds(400, seed=1)
    xte, yte = make_clouds(40, seed=2)
    np.savez_compressed(HERE / "shapes3d_test.npz", x=xte, y=yte, classes=np.array(SHAPES3D))
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for name, aug in (("pointnet", False), ("pointnet_aug", True)):
        model = train_pointnet(xt, yt, augment=aug, epochs=60 if aug else 40)
        save_state(model, name)
        with torch.no_grad():
            acc = (model(torch.from_numpy(xte)).argmax(1) == torch.from_numpy(yte)).float().mean().item()
            rot = random_rotations(len(yte), torch.Generator().manual_seed(9))
            acc_rot = (model(torch.from_numpy(xte) @ rot.transpose(1, 2)).argmax(1) == torch.from_numpy(yte)).float().mean().item()
        print(f"{name}: test accuracy {acc:.4f}, on randomly rotated test clouds {acc_rot:.4f}")
    print(f"point clouds: {time.perf_counter() - t0:.1f} s")

    # PIV
    t0 = time.perf_counter()
    xtr, ftr = make_piv(3000, seed=3)
    xte, fte = make_piv(48, seed=4)
    np.savez_compressed(HERE / "piv_test.npz", x=xte, flow=fte)
    model = train_flow(torch.from_numpy(xtr), torch.from_numpy(ftr))
    save_state(model, "piv_flow")
    with torch.no_grad():
        pred = model(torch.from_numpy(xte))
        epe = (pred - torch.from_numpy(fte)).norm(dim=1).mean().item()
        zero = torch.from_numpy(fte).norm(dim=1).mean().item()
    print(f"piv_flow: test EPE {epe:.4f} px (zero-flow baseline {zero:.4f} px); {time.perf_counter() - t0:.1f} s")

    # boxes
    t0 = time.perf_counter()
    xtr, ytr, btr = make_canvases(4000, seed=5)
    xte, yte, bte = make_canvases(200, seed=6)
    np.savez_compressed(HERE / "canvas_boxes_test.npz", x=xte, y=yte, classes=np.array(SHAPES2D), boxes=bte)
    model = train_boxes(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(btr))
    save_state(model, "box_localiser")
    with torch.no_grad():
        out = model(torch.from_numpy(xte))
        iou = box_iou(out[:, :4], torch.from_numpy(bte)).mean().item()
        acc = (out[:, 4:].argmax(1) == torch.from_numpy(yte)).float().mean().item()
    print(f"box_localiser: test IoU {iou:.4f}, class accuracy {acc:.4f}; {time.perf_counter() - t0:.1f} s")

    write_sidecars()
    print(f"training total {time.perf_counter() - t_all:.1f} s")
    torch.use_deterministic_algorithms(False)
    audit(list(SIDECARS))
    for p in sorted(HERE.glob("*")):
        if p.stem.split(".")[0] in SIDECARS or p.name in ("shapes3d_test.npz", "piv_test.npz", "canvas_boxes_test.npz"):
            print(f"  {p.name:32s} {p.stat().st_size / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
