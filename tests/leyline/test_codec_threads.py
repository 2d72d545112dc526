"""Decoders built from several threads at once: msgspec's half-built type info must never be seen (it segfaults).

The race needs types whose decoding info no thread has built yet, so each round imports a fresh module of nested
structs with string annotations (resolving them runs Python code, where threads switch) and has four threads build
and use a decoder for its root at the same moment. Without the lock in `codec.decoder` some round crashes the
process (6 runs of this test out of 6 failed so, measured); a crash shows here as a signal in the return code.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

LEAVES = 40
ROUNDS = 40
THREADS = 4


def _module_source() -> str:
    lines = ["from __future__ import annotations", "import msgspec"]
    for i in range(LEAVES):
        leaf = f"class Leaf{i}(msgspec.Struct):\n    a: int = {i}\n    b: dict[str, float] = {{}}\n    c: str = ''"
        lines.append(leaf)
    fields = "\n".join(f"    l{i}: Leaf{i} = msgspec.field(default_factory=Leaf{i})" for i in range(LEAVES))
    lines.append(f"class Root(msgspec.Struct):\n{fields}")
    return "\n".join(lines) + "\n"


SCRIPT = textwrap.dedent(
    f"""
    import importlib, sys, threading
    import msgspec
    from leyline_schemas.codec import decoder

    sys.setswitchinterval(1e-6)
    for round_ in range({ROUNDS}):
        module = importlib.import_module(f"fresh_structs_{{round_}}")
        payload = msgspec.msgpack.encode(module.Root())
        barrier = threading.Barrier({THREADS})
        decoded = []

        def work():
            barrier.wait()
            decoded.append(decoder(module.Root).decode(payload))

        threads = [threading.Thread(target=work) for _ in range({THREADS})]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(decoded) == {THREADS}, decoded
        assert all(root.l{LEAVES - 1}.a == {LEAVES - 1} for root in decoded)
    print("decoded", {ROUNDS} * {THREADS})
    """
)


def test_decoders_built_by_several_threads_at_once_are_whole(tmp_path: Path) -> None:
    source = _module_source()
    for round_ in range(ROUNDS):
        (tmp_path / f"fresh_structs_{round_}.py").write_text(source)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        env={"PYTHONPATH": f"{tmp_path}:{root}", "PYTHONFAULTHANDLER": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["decoded", str(ROUNDS * THREADS)]
