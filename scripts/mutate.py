"""Mutation check (outside CI): plant bugs that keep the total relevance right but move it to the wrong place,
run the value-level tests, and report which tests catch each mutant.

Each mutant is one textual replacement in one source file (applied, tested, reverted; the working tree is
restored even on Ctrl-C). A mutant whose text is not found is reported as "stale" (the code moved: update it).

    python scripts/mutate.py [--only NAME ...] [--tests tests/rules tests/test_golden.py ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "src" / "dl_backtrace" / "rules"
DEFAULT_TESTS = ["tests/rules", "tests/test_golden.py", "tests/test_worked_example.py", "tests/engine/test_lrp0.py",
                 "tests/engine/test_tasks.py", "tests/models/test_hf.py"]

# name: (file, original text, mutated text)
MUTANTS: dict[str, tuple[Path, str, str]] = {
    "bias left out of the denominator": (
        RULES / "contribution.py", "(a + terms.bias.abs()).clamp_min_(_floor(a))", "a.clamp_min(_floor(a))"),
    "gate masks swapped": (
        RULES / "contribution.py", "kill_p, kill_n = gate_masks(", "kill_n, kill_p = gate_masks("),
    "contrast straight/crossed swapped": (
        RULES / "contribution.py", "    a_pos = (rp * inv_p) * (only_p | straight)", "    straight, crossed = crossed, "
        "straight\n    a_pos = (rp * inv_p) * (only_p | straight)"),
    "attention A V split 0.7/0.3": (
        RULES / "attention.py", "return 0.5 * a * (g @ absv.mT), 0.5 * absv * (a.mT @ g)",
        "return 0.7 * a * (g @ absv.mT), 0.3 * absv * (a.mT @ g)"),
    "GELU's f replaced by SiLU's": (
        RULES / "gates.py", 'fn = (lambda x: F.gelu(x, approximate="tanh")) if approximate == "tanh" else F.gelu',
        "fn = F.silu"),
    "tanh range +-3": (RULES / "gates.py", '"tanh": Activation("tanh", lower=-2.0, upper=2.0)',
                       '"tanh": Activation("tanh", lower=-3.0, upper=3.0)'),
    "sub treated as add": (RULES / "elementwise.py", "        return 1.0, -alpha\n", "        return 1.0, alpha\n"),
    "product of activations split 0.7/0.3": (
        RULES / "affine.py", "(0.5 * aa * adjs[0](g, ab), 0.5 * ab * adjs[1](g, aa))",
        "(0.7 * aa * adjs[0](g, ab), 0.3 * ab * adjs[1](g, aa))"),
    "sdpa is_causal ignored": (RULES / "attention.py", "    if is_causal:\n", "    if False:\n"),
    "max-pool ties not shared": (RULES / "reduce.py", "share = r / count.clamp_(min=1)", "share = r"),
    "embedding relevance summed over tokens": (RULES / "embedding.py", "ctx.route({1: r.sum(-1)})",
                                               "ctx.route({1: r.sum(-1).flip(-1)})"),
    "scores split 0.7/0.3": (
        RULES / "attention.py", "return 0.5 * aq * (g @ ak), 0.5 * ak * (g.mT @ aq)",
        "return 0.7 * aq * (g @ ak), 0.3 * ak * (g.mT @ aq)"),
}


def run_tests(tests: list[str]) -> tuple[list[str], str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-rf", *tests]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M)
    return failed, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--tests", nargs="*", default=DEFAULT_TESTS)
    args = ap.parse_args()
    print("| mutant | tests that caught it | examples |")
    print("|---|---:|---|")
    weak = 0
    for name, (path, old, new) in MUTANTS.items():
        if args.only and name not in args.only:
            continue
        text = path.read_text()
        if text.count(old) != 1:
            print(f"| {name} | stale | the original text is not found once in {path.name} |")
            weak += 1
            continue
        try:
            path.write_text(text.replace(old, new))
            failed, _ = run_tests(args.tests)
        finally:
            path.write_text(text)
        weak += len(failed) < 3
        shown = ", ".join(f.split("::")[-1] for f in failed[:3])
        print(f"| {name} | {len(failed)} | {shown} |", flush=True)
    print(f"\n{weak} mutant(s) caught by fewer than 3 tests")
    return 1 if weak else 0


if __name__ == "__main__":
    sys.exit(main())
