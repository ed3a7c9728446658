"""docs/masks.md's kernel table says what the code declares: which kernels run band blocks natively
(``BAND_NATIVE``), as a flash-attn window (``WINDOW_NATIVE``) or fall back, and which compute many blocks
in one varlen call (``VARLEN``); one row per registered kernel."""

from __future__ import annotations

from pathlib import Path

from ringx import kernels

DOC = Path(__file__).resolve().parents[1] / "docs" / "masks.md"


def kernel_rows() -> dict[str, list[str]]:
    text = DOC.read_text()
    section = text[text.index("## Kernels: which masks run natively"):]
    section = section[:section.index("\n## ", 3)]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 5:
            continue
        name = cells[0].split("`")[1]
        assert name not in rows, f"{name} has two rows"
        rows[name] = cells
    return rows


def test_kernel_table_matches_the_declarations():
    rows = kernel_rows()
    assert set(rows) == set(kernels.KERNELS)
    for name, (_, band, fallback, varlen, has_run) in rows.items():
        if name in kernels.BAND_NATIVE:
            assert band.startswith("native"), name
        elif name in kernels.WINDOW_NATIVE:
            assert band.startswith("window: native") or band.startswith("window: as"), name
            assert fallback != "-", f"{name}: a band that is no window falls back"
        else:
            assert band.startswith("falls back") and fallback != "-", name
        assert varlen.startswith("yes") == (name in kernels.VARLEN), name
        assert has_run, name
    for name in kernels.BAND_FALLBACK:  # the kernels named as the fallbacks run every band themselves
        assert name in kernels.BAND_NATIVE
