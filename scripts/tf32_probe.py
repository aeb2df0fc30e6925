"""Is TF32 really off inside an explanation, and back on after? Measures a CUDA fp32 matrix product and a
convolution against float64 inside ``dl_backtrace.precision.numerics`` for each way a user can switch TF32 on
(legacy flags, torch >= 2.9 per-backend flags, set_float32_matmul_precision). Exits 3 without CUDA."""

from __future__ import annotations

import sys

import torch

from dl_backtrace.precision import _read, _write, numerics


def errors() -> tuple[float, float]:
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(512, 512, device="cuda", generator=g)
    b = torch.randn(512, 512, device="cuda", generator=g)
    mm = float(((a @ b).double() - a.double() @ b.double()).abs().max())
    x = torch.randn(1, 64, 32, 32, device="cuda", generator=g)
    w = torch.randn(64, 64, 3, 3, device="cuda", generator=g)
    conv = torch.nn.functional.conv2d(x, w)
    ref = torch.nn.functional.conv2d(x.double(), w.double())
    return mm, float((conv.double() - ref).abs().max())


def _usable() -> bool:
    """torch.export reads the legacy cuDNN getter, which raises on inconsistent flags: export must still work."""
    try:
        torch.export.export(torch.nn.Conv2d(1, 1, 1).cuda(), (torch.zeros(1, 1, 2, 2, device="cuda"),))
    except RuntimeError as e:
        print(f"export fails after restoring: {str(e)[:120]}")
        return False
    return True


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing probed")
        return 3
    saved = _read()
    ok = True
    users = {
        "legacy flags": lambda: (setattr(torch.backends.cuda.matmul, "allow_tf32", True),
                                 setattr(torch.backends.cudnn, "allow_tf32", True)),
        "matmul precision high": lambda: torch.set_float32_matmul_precision("high"),
    }
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        users["per-backend tf32"] = lambda: (setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
                                             setattr(torch.backends.cudnn.conv, "fp32_precision", "tf32"))
    print("| user setting | outside: matmul / conv error | inside fp32 | inside fast | restored |")
    print("|---|---|---|---|---|")
    for name, switch_on in users.items():
        _write(saved)
        switch_on()
        outside = errors()
        with numerics("fp32"):
            strict = errors()
        with numerics("fast"):
            fast = errors()
        after = errors()
        restored = after == outside and _usable()
        good = max(strict) < 1e-3 and restored and _read() is not None
        ok &= good
        print(f"| {name} | {outside[0]:.1e} / {outside[1]:.1e} | {strict[0]:.1e} / {strict[1]:.1e} | "
              f"{fast[0]:.1e} / {fast[1]:.1e} | {restored} |", flush=True)
    _write(saved)
    print("TF32 OFF INSIDE: OK" if ok else "TF32 PROBE FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
