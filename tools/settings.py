"""Generate docs/settings.md, the reference of every scan setting, from eqaudit.config.SETTINGS.

Each row is one Setting: the config key (``[tool.eqaudit]``, a sidecar or ``--config`` file), the
command-line option, the environment variable, the default, whether a config file may set it, whether
it changes measured numbers (the audit fingerprint) and its help.

    python tools/settings.py          # rewrite docs/settings.md
    python tools/settings.py --check  # exit 1 when docs/settings.md is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "docs" / "settings.md"

from eqaudit.config import ENV_PREFIX, SETTINGS  # noqa: E402


def _default(s) -> str:
    if s.default_text is not None:
        return s.default_text
    if s.default is None:
        return "–"
    return f"`{json.dumps(s.default)}`"  # as TOML writes it


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def build() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `eqaudit/config.py` (`SETTINGS`) by `python tools/settings.py`; do not edit by hand.",
        "",
        "Precedence, lowest first: default < `[tool.eqaudit]` in pyproject.toml < the model's sidecar",
        "`MODEL_STEM.eqaudit.toml` (or `--config FILE`) < `EQAUDIT_*` environment variables < command-line options.",
        "A key may be written with `-` or `_` in a config file.",
        "",
        "| key | option | environment | default | in files | measured | help |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SETTINGS.values():
        option = s.option + (f"/--no-{s.option[2:]}" if s.kind == "on-off" else "") + (f", {s.short}" if s.short else "")
        text = f"`false`: {s.help}" if s.kind == "switch" and s.default is True else s.help  # --no-cache: cache = false
        commands = "" if s.commands == ("scan",) else f" ({', '.join(s.commands)})"
        lines.append(
            f"| `{s.name}` | `{option}`{commands} | `{ENV_PREFIX}{s.name.upper()}` | {_cell(_default(s))} "
            f"| {'yes' if s.files_allowed else 'no'} | {'yes' if s.measured else 'no'} | {_cell(text)} |"
        )
    lines += ["", "`measured`: part of the audit fingerprint, so changing it re-measures (no cached result, no --resume).", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = build()
    if "--check" in argv:
        current = REFERENCE.read_text() if REFERENCE.exists() else ""
        if current != text:
            print(f"{REFERENCE} is out of date; run: python tools/settings.py", file=sys.stderr)
            return 1
        return 0
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(text)
    print(f"wrote {REFERENCE} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
