"""The architecture's contract (``.importlinter``): the layers, no torch and no Ray where nothing trains, the
analysis apart from the study and the run, nothing importing the benchmarks, pyarrow only in storage; and zero
import circles (function-level imports included).  In-process: grimp reads the source, nothing is imported."""

import grimp
from importlinter import cli

from helpers.cli import REPO


def test_the_contract_holds(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.lint_imports(config_filename=str(REPO / ".importlinter")) == cli.EXIT_STATUS_SUCCESS, capsys.readouterr()


def test_no_module_is_in_an_import_circle():
    graph = grimp.build_graph("ablate")
    circles = [
        (a, b)
        for a in sorted(graph.modules)
        for b in graph.find_modules_directly_imported_by(a)
        if graph.find_shortest_chain(importer=b, imported=a)
    ]
    assert not circles, circles


def test_the_block_registry_knows_every_builtin_without_torch_and_in_registration_order():
    from ablate.models import registry

    assert registry.list_blocks()[: len(registry.BUILTIN)] == list(registry.BUILTIN)
    import ablate.models.blocks  # noqa: F401 -- registers the built-in classes

    assert [n for n in registry.BLOCKS if n in registry.BUILTIN] == list(registry.BUILTIN)
    assert all(registry.BLOCKS[n].__module__ == registry.BUILTIN_MODULE for n in registry.BUILTIN)
