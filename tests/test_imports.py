"""The package's modules import each other without cycles, counting imports inside functions too (a
function-level import must not be a way to hide one)."""

import ast
import os

import m2f_edge

PACKAGE_DIR = os.path.dirname(os.path.abspath(m2f_edge.__file__))


def module_name(path):
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
    return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def package_modules():
    modules = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[module_name(path)] = path
    return modules


def imported_modules(name, path, known):
    """Every m2f_edge module `name` imports anywhere in its file (module level or in functions)."""
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` depends on pkg.mod; `from pkg import name` on pkg (its __init__)
            targets = ["{}.{}".format(prefix, alias.name) if "{}.{}".format(prefix, alias.name) in known else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from a.b import c` names module a.b or a.b.c
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycles(graph):
    """Every cycle, once, as a list of modules (Tarjan's strongly connected components of size > 1)."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .other import thing\n")
    assert imported_modules("m2f_edge.m", str(source), {"m2f_edge.m", "m2f_edge.other"}) == {"m2f_edge.other"}


def test_the_package_has_no_import_cycle():
    modules = package_modules()
    known = set(modules) | {"m2f_edge._core"}  # the extension module: a leaf
    graph = {name: imported_modules(name, path, known) for name, path in modules.items()}
    # package __init__ files re-export their modules: an edge into a package means its __init__ runs
    assert "m2f_edge.runners" in graph["m2f_edge.segmenter"]
    assert find_cycles(graph) == []
