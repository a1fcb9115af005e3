"""Generate docs/messages.md, the catalogue of every error eqaudit can print, from the source code.

Every construction of an eqaudit error (``XxxError(f"...")`` and the symmetries' ``self._error(expected,
got, do)``) is read with ``ast``; its exit code comes from eqaudit/errors.py, its fix is the part of the
message after the last "do" or ";". The CLI's own lines (usage errors, unexpected exceptions, gate
failures) are listed in CLI_ROWS and checked against eqaudit/cli.py by the test.

    python tools/messages.py          # rewrite docs/messages.md
    python tools/messages.py --check  # exit 1 when docs/messages.md is out of date
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "eqaudit"
CATALOGUE = ROOT / "docs" / "messages.md"

# (exit code, what, message as printed, fix, the text in eqaudit/cli.py that prints it)
CLI_ROWS = [
    (2, "usage", "Usage: eqaudit scan [OPTIONS] ... Error: No such option: --bogus (typer's own usage errors)",
     "see `eqaudit COMMAND --help`", "no_args_is_help=True"),
    (3, "unexpected", "error: unexpected <Type>: <message> (a bug in eqaudit? re-run with --verbose for the traceback)",
     "re-run with --verbose and report the traceback", "a bug in eqaudit? re-run with --verbose for the traceback"),
    (1, "gate", "gate failed: <model> <symmetry>: <metric> <value> <op> <threshold> ...",
     "the audit finished and a gate failed: improve the model or relax the gate", "gate failed:"),
]


def error_classes() -> dict[str, int]:
    """Error class name -> exit code, from eqaudit/errors.py (inherited codes followed)."""
    tree = ast.parse((PACKAGE / "errors.py").read_text())
    codes: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            code = next((codes[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in codes), None)
            for stmt in node.body:
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(stmt.value, ast.Constant):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    if any(isinstance(t, ast.Name) and t.id == "exit_code" for t in targets):
                        code = stmt.value.value
            if code is not None:
                codes[node.name] = code
    return codes


def _hole(node: ast.expr) -> str:
    """A value spliced into a message, as <name>."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("str", "repr") and len(node.args) == 1:
        node = node.args[0]
    text = ast.unparse(node)
    return f"<{text}>" if len(text) <= 40 else "<...>"


def render(node: ast.expr) -> str:
    """A message expression as a template: literal text, with <expression> where values go."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                parts.append(_hole(v.value))  # repr'd values keep their own quotes
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return render(node.left) + render(node.right)
    return _hole(node)


# fixes for messages that state only the problem (matched by the start of the message; the test checks
# that each still matches a message, so a reworded message cannot leave a stale fix behind)
FIXES = {
    "Setting <name> from <where>: <exc>": "change the value in the file or flag named",
    "[tool.eqaudit] in": "write [tool.eqaudit] as a table of settings",
    "Model factory file": "check the path after --model-factory (relative to the config file's folder)",
    "Folder <path> has class sub-folders but no images": "put images in the class sub-folders",
    "Image <f> could not be read": "re-save or remove the image",
    "<path> could not be read by torch.load": "save the data again with torch.save (tensors only)",
    "<path> holds no samples": "save at least one row",
    "Importing model factory module": "fix the error in the factory's module (run it with --verbose)",
    "Importing model factory file": "fix the error in the factory file (run it with --verbose)",
    "<path> could not be loaded with torch.export.load": "export the model again with torch.export.save",
    "Weights in <path> do not fit the architecture": "name the factory that built these weights",
    "Calling model factory": "make the factory callable without arguments",
    "Loading TorchScript": "re-save the TorchScript file, or export to .pt2 or ONNX",
    "Model factory <factory> returned": "make the factory return a torch.nn.Module",
    "onnxruntime failed on a batch": "check that --data (and --input-shape) match the model's input",
    "output <name>: <exc>": "see the message of the output named",
    "Expected at least one GEN=i,j,... after 'label-perm:'": "write e.g. label-perm:rot90=1,0",
    "Unknown parameter <key> for symmetry": "run `eqaudit symmetries` for the parameters and defaults",
}

IMPERATIVE = r"(?:Run|Use|Pass|Save|Check|Fix|Name|Drop|Put|Add|Set|Give|Install|Remove|Choose|Declare|Export|Re-run)"


def fix_of(message: str) -> str:
    """The advice part of a message: after the last ', do ' / '; do ', else after the last ';', else its
    last imperative sentence, else (for "Expected X, got Y") give X."""
    m = list(re.finditer(r"[,;] do ", message))
    if m:
        return message[m[-1].end():].strip().rstrip(".")
    if ";" in message:
        return message.rsplit(";", 1)[1].strip().rstrip(".")
    m = list(re.finditer(rf"(?:^|[.?] ){IMPERATIVE}\b[^.]*", message))
    if m:
        return m[-1].group(0).lstrip(".? ").strip()
    m = re.search(r"[Ee]xpected (.+?), got ", message)
    if m:
        return f"give {m.group(1)}"
    return next((fix for start, fix in FIXES.items() if message.startswith(start)), "")


def extract() -> list[dict]:
    """Every error message in the package: exit code, class, template, fix, module:function."""
    codes = error_classes()
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text())
        module = path.relative_to(ROOT).as_posix()
        # helpers that build a message (``def _square_message(...): return f"..."``), rendered where they are used
        built = {f.name: r.value for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                 for r in ast.walk(f) if isinstance(r, ast.Return) and isinstance(r.value, (ast.JoinedStr, ast.Constant, ast.BinOp))}
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr if isinstance(node.func, ast.Attribute) else None
                if name in codes:
                    arg = node.args[0]
                    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id in built:
                        arg = built[arg.func.id]
                    kind, message = name, render(arg)
                elif name == "_error" and len(node.args) == 3 and "symmetries" in module:
                    kind = "SymmetryError"
                    expected, got, do = (render(a) for a in node.args)
                    message = f"Expected {expected} for '<symmetry>', got {got}, do {do}"
                elif name == "_check_count" and len(node.args) == 3 and "symmetries" in module:  # base.Symmetry._check_count
                    kind = "SymmetryError"
                    n, what, do = _hole(node.args[0]), render(node.args[1]), render(node.args[2])
                    message = f"Expected at most <MAX_ELEMENTS> {what} for '<symmetry>', got {n}, do {do}"
                else:
                    continue
                if message.startswith("<") and message.endswith(">") and " " not in message:
                    continue  # re-raising a message built elsewhere (listed where it is built)
                rows.append({"exit": codes[kind], "kind": kind, "message": message, "fix": fix_of(message),
                             "where": f"{module}:{func.name}"})
    unique = {(r["exit"], r["kind"], r["message"], r["where"]): r for r in rows}
    return sorted(unique.values(), key=lambda r: (r["exit"], r["kind"], r["where"], r["message"]))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def build() -> str:
    lines = [
        "# Messages",
        "",
        "Every error eqaudit can print, with its exit code and its fix. Errors print as one line",
        "(`error: MESSAGE`), never a traceback unless `--verbose`. `<...>` marks a value filled in at run time.",
        "Exit codes (DESIGN.md): 0 every gate passed; 1 a gate failed; 2 usage or configuration error;",
        "3 runtime failure before a verdict.",
        "",
        "Generated by `python tools/messages.py` from the source; `tests/test_message_catalogue.py` fails when it",
        "is out of date.",
        "",
        "## Printed by the command line itself",
        "",
        "| exit | message | fix |",
        "| --- | --- | --- |",
    ]
    for code, _what, message, fix, _needle in CLI_ROWS:
        lines.append(f"| {code} | {_cell(message)} | {_cell(fix)} |")
    rows = extract()
    for code in sorted({r["exit"] for r in rows}):
        lines += ["", f"## Exit {code}", "", "| error | message | fix | raised in |", "| --- | --- | --- | --- |"]
        for r in (r for r in rows if r["exit"] == code):
            lines.append(f"| {r['kind']} | {_cell(r['message'])} | {_cell(r['fix']) or '(in the message)'} | `{r['where']}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = build()
    if "--check" in argv:
        current = CATALOGUE.read_text() if CATALOGUE.exists() else ""
        if current != text:
            print(f"{CATALOGUE} is out of date; run: python tools/messages.py", file=sys.stderr)
            return 1
        return 0
    CATALOGUE.parent.mkdir(exist_ok=True)
    CATALOGUE.write_text(text)
    print(f"wrote {CATALOGUE} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
