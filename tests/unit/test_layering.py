"""The one-way data flow of DESIGN.md, checked on every import statement of the product packages.

chaincode/ is what peers run: it imports nothing of the other packages. network/ and peers/ are the
bottom; federated/ and twins/ sit on network/ (twins may use federated's models) and never import
orchestrator/, the top. A violation names the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chaincode", "network", "peers", "federated", "twins", "orchestrator", "bench")
#: What each package may import of the others (itself always).
ALLOWED = {
    "chaincode": set(),
    "network": set(),
    "peers": {"network"},
    "federated": {"network", "peers"},
    "twins": {"network", "peers", "federated"},
    "orchestrator": {"network", "peers", "federated", "twins", "chaincode"},
}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_every_package_imports_only_what_lies_below_it() -> None:
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imports_of(path):
                top = module.split(".")[0]
                if top in PACKAGES and top != package and top not in allowed:
                    violations.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not violations, "imports against DESIGN.md's data flow:\n" + "\n".join(violations)
