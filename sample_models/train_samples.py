"""Deterministically train, export and verify eqaudit's shipped sample models and write their test data.

Run from anywhere:  python sample_models/train_samples.py
Writes into the folder of this file: NAME.pt (state dicts), NAME.onnx (self-contained, dynamic
batch), digits_test.npz and digits64.npz. Prints test accuracies and rot90 flip rates (torch and
ONNX), and fails loudly if a check does not hold.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

from digits_models import DigitsLR, DigitsLRWithProba, PlainCNN, Rot90InvariantCNN  # noqa: E402

SEED = 0
OPSET = 18
CLASSES = np.array([str(i) for i in range(10)])  # unicode '<U1', loads with allow_pickle=False

# name -> (epochs, learning rate); Adam, batch size 64, cosine schedule.
TRAIN_CFG = {
    "digits_cnn": dict(epochs=25, lr=3e-3),
    "digits_cnn_aug": dict(epochs=60, lr=3e-3),
    "digits_cnn_rot90": dict(epochs=25, lr=3e-3),
    "digits_lr": dict(epochs=100, lr=3e-2),
}
BATCH_SIZE = 64


def set_determinism(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # results independent of the machine's core count
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- data


def load_data():
    """Return (x32_train, x32_test, x64_train, x64_test, y_train, y_test) as torch tensors."""
    digits = load_digits()
    x8 = (digits.images.astype(np.float32) / 16.0)  # (N, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=SEED, stratify=y)
    x8_t = torch.from_numpy(x8).unsqueeze(1)  # (N, 1, 8, 8)
    x32 = F.interpolate(x8_t, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    x64 = x8_t.reshape(len(y), 64)
    yt = torch.from_numpy(y)
    return x32[tr], x32[te], x64[tr], x64[te], yt[tr], yt[te]


def random_rotate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-180, 180) deg (bilinear, zero padding)."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=gen) * 2.0 - 1.0) * math.pi
    c, s = torch.cos(ang), torch.sin(ang)
    zero = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s, zero], 1), torch.stack([s, c, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------- training


def train(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, augment: bool = False) -> nn.Module:
    cfg = TRAIN_CFG[name]
    gen = torch.Generator().manual_seed(SEED + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    steps_per_epoch = math.ceil(len(y) / BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch, pct_start=0.15
    )
    model.train()
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(len(y), generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(y), BATCH_SIZE):
            bi = perm[i : i + BATCH_SIZE]
            xb, yb = x[bi], y[bi]
            if augment:
                xb = random_rotate(xb, gen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(bi)
            n += len(bi)
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg["epochs"]:
            print(f"  {name} epoch {epoch + 1:3d}/{cfg['epochs']}  train loss {total / n:.4f}", flush=True)
    return model.eval()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def torch_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model(x).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def rot90_flip_rates(predict, x: np.ndarray) -> dict:
    """Flip rate of argmax under rot90 k=1,2,3 vs k=0: per k, mean over k, and 'any k'."""
    base = predict(x).argmax(1)
    flips = [predict(np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1)))).argmax(1) != base for k in (1, 2, 3)]
    out = {f"k={k}": float(f.mean()) for k, f in zip((1, 2, 3), flips)}
    out["mean"] = float(np.mean([f.mean() for f in flips]))
    out["any"] = float(np.logical_or.reduce(flips).mean())
    return out


def fmt_rates(r: dict) -> str:
    return "mean {mean:.4f} (k=1 {k=1:.4f}, k=2 {k=2:.4f}, k=3 {k=3:.4f}; any-k {any:.4f})".format_map(r)


# --------------------------------------------------------------------------- export


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, output_names: list[str]) -> None:
    """torch.onnx.export (dynamo exporter), dynamic batch, weights embedded in a single file."""
    import onnx

    data_file = Path(str(path) + ".data")
    for p in (path, data_file):
        if p.exists():
            p.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            input_names=["input"],
            output_names=output_names,
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    # Make sure the file is self-contained, whatever the exporter did.
    m = onnx.load(str(path), load_external_data=True)
    onnx.save_model(m, str(path), save_as_external_data=False)
    if data_file.exists():
        data_file.unlink()
    onnx.checker.check_model(str(path), full_check=True)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def check_onnx(path: Path, model: nn.Module, x: torch.Tensor, output_names: list[str]):
    """Compare ONNX outputs with torch (atol 1e-4) on the whole set, and on batch sizes 1 and 5."""
    sess = ort_session(path)
    assert [i.name for i in sess.get_inputs()] == ["input"], path
    assert [o.name for o in sess.get_outputs()] == output_names, path
    assert isinstance(sess.get_inputs()[0].shape[0], str), f"{path}: batch dimension is not dynamic"
    with torch.no_grad():
        ref = model(x)
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    for sub in (slice(None), slice(0, 1), slice(0, 5)):
        got = sess.run(None, {"input": x[sub].numpy()})
        for name, g, r in zip(output_names, got, ref):
            err = float(np.abs(g - r[sub]).max())
            assert err <= 1e-4, f"{path.name}:{name} differs from torch by {err}"
    got = sess.run(None, {"input": x.numpy()})
    max_err = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    return sess, max_err


# --------------------------------------------------------------------------- main


def main() -> None:
    t0 = time.perf_counter()
    set_determinism(SEED)
    x32_tr, x32_te, x64_tr, x64_te, y_tr, y_te = load_data()
    y_np = y_te.numpy()
    print(f"digits: {len(y_tr)} train / {len(y_te)} test (stratified, seed {SEED})")

    # ---- data files
    np.savez_compressed(HERE / "digits_test.npz", x=x32_te.numpy().astype(np.float32), y=y_np.astype(np.int64), classes=CLASSES)
    np.savez_compressed(HERE / "digits64.npz", x=x64_te.numpy().astype(np.float32), y=y_np.astype(np.int64), classes=CLASSES)

    # ---- training (each model from its own seed, so one model's changes do not move the others)
    specs = [
        ("digits_cnn", PlainCNN, x32_tr, False),
        ("digits_cnn_aug", PlainCNN, x32_tr, True),
        ("digits_cnn_rot90", Rot90InvariantCNN, x32_tr, False),
        ("digits_lr", DigitsLR, x64_tr, False),
    ]
    models: dict[str, nn.Module] = {}
    train_times: dict[str, float] = {}
    for name, cls, xtr, aug in specs:
        torch.manual_seed(SEED)
        t = time.perf_counter()
        print(f"training {name} ({cls.__name__}, {sum(p.numel() for p in cls().parameters())} params"
              f"{', random rotation augmentation' if aug else ''})", flush=True)
        models[name] = train(name, cls(), xtr, y_tr, augment=aug)
        train_times[name] = time.perf_counter() - t
        torch.save(models[name].state_dict(), HERE / f"{name}.pt")
    train_wall = time.perf_counter() - t0

    # ---- export, verify, report
    print("\nresults on the test set (N = %d)" % len(y_np))
    failures = []
    for name, _, _, _ in specs:
        model = models[name]
        # Reload from disk the way eqaudit will: weights_only state dict into a fresh instance.
        fresh = type(model)()
        fresh.load_state_dict(torch.load(HERE / f"{name}.pt", weights_only=True))
        fresh.eval()
        xte = x64_te if name == "digits_lr" else x32_te
        onnx_path = HERE / f"{name}.onnx"
        if name == "digits_lr":
            export_onnx(DigitsLRWithProba(fresh).eval(), xte[:2], onnx_path, ["logits", "probabilities"])
            sess, err = check_onnx(onnx_path, DigitsLRWithProba(fresh).eval(), xte, ["logits", "probabilities"])
            probs = sess.run(["probabilities"], {"input": xte.numpy()})[0]
            assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
        else:
            export_onnx(fresh, xte[:2], onnx_path, ["logits"])
            sess, err = check_onnx(onnx_path, fresh, xte, ["logits"])

        def p_torch(a: np.ndarray, m=fresh) -> np.ndarray:
            return torch_logits(m, torch.from_numpy(a))

        def p_onnx(a: np.ndarray, s=sess) -> np.ndarray:
            return s.run(["logits"], {"input": a})[0]

        acc_t = accuracy(p_torch(xte.numpy()), y_np)
        acc_o = accuracy(p_onnx(xte.numpy()), y_np)
        print(f"{name:17s} acc torch {acc_t:.4f}  onnx {acc_o:.4f}  max|onnx-torch| {err:.2e}  "
              f"train {train_times[name]:.1f}s  "
              f"pt {os.path.getsize(HERE / f'{name}.pt') / 1024:.1f} KiB  "
              f"onnx {os.path.getsize(onnx_path) / 1024:.1f} KiB")
        if name != "digits_lr":
            xs = xte.numpy()
            r_t, r_o = rot90_flip_rates(p_torch, xs), rot90_flip_rates(p_onnx, xs)
            print(f"{'':17s} rot90 flip rate torch {fmt_rates(r_t)}")
            print(f"{'':17s} rot90 flip rate onnx  {fmt_rates(r_o)}")
            if name == "digits_cnn_rot90" and (r_t["any"] != 0.0 or r_o["any"] != 0.0):
                failures.append(f"{name}: rot90 flip rate is not 0")
            if name == "digits_cnn" and r_t["mean"] < 0.05:
                failures.append(f"{name}: rot90 flip rate {r_t['mean']} is not clearly > 0")
        goal = {"digits_cnn": 0.95, "digits_cnn_aug": 0.85, "digits_cnn_rot90": 0.90, "digits_lr": 0.90}[name]
        if acc_t < goal:
            failures.append(f"{name}: test accuracy {acc_t:.4f} < {goal}")

    for f in ("digits_test.npz", "digits64.npz"):
        d = np.load(HERE / f, allow_pickle=False)
        print(f"{f}: " + ", ".join(f"{k} {d[k].shape} {d[k].dtype}" for k in d.files)
              + f"  ({os.path.getsize(HERE / f) / 1024:.1f} KiB)")
    print(f"\ntraining wall time {train_wall:.1f}s, total {time.perf_counter() - t0:.1f}s")
    if failures:
        raise SystemExit("CHECK FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
