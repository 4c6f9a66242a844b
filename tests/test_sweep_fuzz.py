"""Hostile sweep files: `yrmpi sweep FILE` exits 2 with one line, no traceback, and writes nothing.

Each example is a valid sweep with at least one hostile change (or raw garbage), so it must be
refused before MPI; `launch.run` fails the test if it is ever reached.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yrmpi import launch
from yrmpi.cli import main

ENTRY = "class Sup:\n    def __init__(self, scale=1):\n        self.scale = scale\n\n" \
        "    def run(self, params, trial):\n        return {'loss': 1.0}\n"
BASE = ["name: s", "entry: entry.py:Sup", "run: run", "params: {lr: [0.1, 0.2]}", "output: out"]

scalar_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20)
hostile_line = st.one_of(
    st.sampled_from(["name: t", "run: other", "params: {x: [1]}", "output: elsewhere"]),  # duplicate keys
    st.builds(lambda a, b: f"workers: {a}:{b:02d}", st.integers(0, 99), st.integers(0, 59)),  # sexagesimal
    st.builds(lambda n: f"workers: {n}", st.integers(10_001, 10 ** 30)),  # above the bound
    st.builds(lambda n: f"workers: ${{YRMPI_FUZZ_UNSET:-{'9' * n}}}", st.integers(4400, 6000)),
    st.builds(lambda c: f'extra: "\\u{c:04x}"', st.integers(0xD800, 0xDFFF)),  # a lone surrogate
    st.builds(lambda c: f'init: {{scale: "\\u{c:04x}"}}', st.integers(0xD800, 0xDFFF)),
    st.builds(lambda s: f'out{s}put: x', scalar_text.filter(lambda s: s.isalnum())),  # unknown key
    st.builds(lambda n: "init: " + "[" * n + "]" * n, st.integers(65, 3000)),  # deep nesting
    st.builds(lambda k: f"init: {{{json.dumps(k)}: 1}}", scalar_text.filter(lambda k: k not in ("scale", ""))),
    st.builds(lambda n: f"workers: {-n}", st.integers(1, 10 ** 6)),
    st.just("workers: on"), st.just("seeds: [1, 1]"), st.just("samples: 0"), st.just("retries: -1"),
    st.just("params: {}"), st.just("params: {lr: []}"), st.just("params: {lr: {loguniform: [0, 1]}}"),
    st.just("timeout: .nan"), st.just("timeout: -.inf"), st.just("metric: {name: loss, mode: up}"),
    st.just("init: !!python/object/apply:os.system [echo hacked]"), st.just("x: &a [*a]"),
    st.just("output: 2024-01-02"), st.just("name: ../../etc"), st.just('output: "a\\0b"'),
    st.builds(lambda n: "output: " + "d" * n, st.integers(256, 5000)),
)


def run_sweep(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), \
            mock.patch.object(launch, "run", side_effect=AssertionError("MPI would have been launched")):
        code = main(["sweep", str(path), *extra])
    return code, out.getvalue(), err.getvalue()


def check(content: bytes, *extra: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "entry.py").write_text(ENTRY)
        path = folder / "s.yaml"
        path.write_bytes(content)
        before = sorted(p.name for p in folder.iterdir())
        cwd = os.getcwd()
        os.chdir(folder)  # a relative output lands here, where "nothing written" is checked
        try:
            code, _, err = run_sweep(path, *extra)
        finally:
            os.chdir(cwd)
        lines = err.strip().splitlines()
        assert code == 2, (content[:300], err[-2000:])
        assert len(lines) == 1 and "Traceback" not in err, (content[:300], err[-2000:])
        after = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
        assert after == before, (content[:300], after)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(hostile_line, min_size=1, max_size=3), order=st.randoms(use_true_random=False),
       dry=st.booleans())
def test_hostile_sweep_files_are_one_line_exit_2_and_write_nothing(lines, order, dry) -> None:
    doc = BASE + lines
    order.shuffle(doc)
    check("\n".join(doc).encode("utf-8") + b"\n", *(["--dry-run"] if dry else []))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_garbage_files_are_one_line_exit_2_and_write_nothing(garbage) -> None:
    check(garbage)
