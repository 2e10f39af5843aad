"""The house's one rule of imports: tools -> roles -> shared core, and never back up."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "doctor"
ROLES = {"monitor", "inspector", "controller", "notifier", "consumer", "vim"}
TOOLS = {"client", "scenario", "bench", "testkit", "tests"}


def imports_of(package: str) -> dict[str, set[str]]:
    """Each module of ``package`` (by path) and the top-level packages it imports, lazy
    imports inside functions included."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_core_imports_no_role_and_no_tool():
    wrong = {module: sorted(names & (ROLES | TOOLS))
             for module, names in imports_of(CORE).items() if names & (ROLES | TOOLS)}
    assert wrong == {}


def test_no_role_imports_a_tool():
    wrong = {module: sorted(names & TOOLS)
             for role in ROLES for module, names in imports_of(role).items()
             if names & TOOLS}
    assert wrong == {}


def test_the_roles_depend_on_one_another_without_a_cycle():
    uses = {role: set().union(*imports_of(role).values()) & (ROLES - {role})
            for role in ROLES}
    done: set[str] = set()

    def visit(role: str, path: tuple[str, ...]) -> None:
        assert role not in path, f"import cycle: {' -> '.join((*path, role))}"
        if role in done:
            return
        for used in sorted(uses[role]):
            visit(used, (*path, role))
        done.add(role)

    for role in sorted(ROLES):
        visit(role, ())
