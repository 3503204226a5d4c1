"""Every public function, class and method of the package has a docstring."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "advsample"


def _undocumented(tree: ast.AST, path: Path, prefix: str = "") -> list[str]:
    """``path:line qualname`` of every public def/class below ``tree`` without a docstring."""
    missing = []
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith("_"):
            continue
        if not ast.get_docstring(node):
            missing.append(f"{path}:{node.lineno} {prefix}{node.name}")
        if isinstance(node, ast.ClassDef):
            missing += _undocumented(node, path, prefix + node.name + ".")
    return missing


def test_every_public_object_has_a_docstring():
    files = sorted(SRC.rglob("*.py"))
    assert files, f"no sources found under {SRC}"
    missing = []
    for path in files:
        missing += _undocumented(ast.parse(path.read_text()), path.relative_to(SRC.parents[1]))
    assert not missing, "public objects without a docstring:\n" + "\n".join(missing)


def test_checker_finds_a_missing_docstring():
    source = (
        "def f():\n    '''Doc.'''\n"
        "def g():\n    pass\n"
        "def _h():\n    pass\n"
        "class C:\n    '''Doc.'''\n    def m(self):\n        pass\n"
        "    def _p(self):\n        pass\n"
    )
    found = _undocumented(ast.parse(source), Path("x.py"))
    assert found == ["x.py:3 g", "x.py:9 C.m"]
