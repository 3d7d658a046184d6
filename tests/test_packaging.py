"""Packaging and repository hygiene: a light import, optional Avalanche, metadata, benchmark records.

The import checks run in fresh interpreters (``subprocess``), since this test process has long
imported everything. "Avalanche not installed" is produced the way Python documents it: a
``None`` entry in ``sys.modules`` makes ``import avalanche`` raise ``ModuleNotFoundError``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lifelong_kd"
RESULTS_MD = REPO / "docs" / "results.md"
# Modules `import lifelong_kd` must not load: each costs start-up time (torchvision pulls in
# torch._dynamo) or drags in an optional dependency.
HEAVY_MODULES = ("torchvision", "torch._dynamo", "avalanche", "matplotlib", "torch.utils.benchmark")
WITHOUT_AVALANCHE = "import sys; sys.modules['avalanche'] = None; "


def python(code: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (one torch thread), from the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **environment}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=False)


@functools.cache
def load_script(name: str) -> ModuleType:
    """A benchmark script (``benchmarks/<name>.py``) as a module, without running its main()."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------- start-up


def test_import_loads_no_optional_or_slow_module():
    code = f"import json, sys, lifelong_kd; print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_import_prints_nothing():
    done = python("import lifelong_kd")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr


def test_latency_timing_import_prints_no_cuda_home_warning(tmp_path):
    # torch's cpp_extension logs "No CUDA runtime is found" at import when CUDA_HOME names a
    # directory and no GPU is present; importing it directly shows that this check can fail.
    control = python("import torch.utils.cpp_extension", CUDA_HOME=str(tmp_path))
    if "No CUDA runtime is found" not in control.stderr:
        pytest.skip("torch does not log the CUDA_HOME warning here (a GPU is present, or torch changed)")
    code = (
        "import torch\n"
        "from lifelong_kd.evaluation.compression import latency_seconds\n"
        "print(latency_seconds(torch.nn.Linear(4, 2), (4,), batch_size=8, min_run_time=0.01) > 0)\n"
    )
    done = python(code, CUDA_HOME=str(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert "No CUDA runtime is found" not in done.stderr


# ---------------------------------------------------------------- Avalanche as an extra


def test_only_the_integration_module_imports_avalanche():
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "integrations" / "avalanche.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[0] == "avalanche" for name in names):
                importers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert importers == []


def test_integration_import_without_avalanche_names_the_extra():
    code = WITHOUT_AVALANCHE + (
        "import lifelong_kd\n"
        "try:\n"
        "    import lifelong_kd.integrations.avalanche\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("AvalancheNotInstalledError ")
    assert "pip install 'lifelong-kd[avalanche]'" in done.stdout


def test_engine_avalanche_without_avalanche_is_a_one_paragraph_error(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--engine", "avalanche", "--benchmark", "split-digits", "--epochs", "1", "--out", str(out), "--quiet"]
    done = python(WITHOUT_AVALANCHE + f"from lifelong_kd.cli import main; sys.exit(main({argv!r}))")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "lifelong-kd[avalanche]" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_dependencies_keep_the_users_torch_and_avalanche_is_an_extra():
    from packaging.requirements import Requirement

    project = pyproject()["project"]
    core = {Requirement(text).name: Requirement(text) for text in project["dependencies"]}
    for name in ("torch", "torchvision"):
        assert core[name].specifier, f"{name} needs a lower bound"
        assert all(spec.operator == ">=" for spec in core[name].specifier), core[name]
    assert "avalanche-lib" not in core
    extras = project["optional-dependencies"]
    assert [Requirement(text).name for text in extras["avalanche"]] == ["avalanche-lib"]
    test_extra = [Requirement(text) for text in extras["test"]]
    # The test suite runs the real Avalanche pipeline: the test extra must bring Avalanche.
    assert any(r.name == "avalanche-lib" or (r.name == project["name"] and "avalanche" in r.extras) for r in test_extra)


def test_license_file_matches_the_metadata():
    license_text = (REPO / "LICENSE").read_text()
    assert pyproject()["project"]["license"] == {"text": "MIT"}
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the lifelong_kd developers" in license_text


def test_ci_runs_the_readme_test_command():
    command = 'pip install -e ".[test]" && pytest'
    assert command in (REPO / "README.md").read_text()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert any(line.startswith(command) for line in ci_lines)


# ---------------------------------------------------------------- benchmark records in git


def tracked_benchmark_output() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "ls-files", "benchmarks/output"], capture_output=True, text=True, cwd=REPO, check=True)
    return done.stdout.splitlines()


def test_benchmark_output_in_git_holds_only_small_records():
    files = tracked_benchmark_output()
    assert files, "benchmarks/output holds the records the docs tables are rebuilt from"
    in_folders = [name for name in files if name.count("/") > 2]  # benchmarks/output/<folder>/...
    not_records = [name for name in files if not name.endswith((".jsonl", ".json", ".md", ".log"))]
    assert in_folders == [] and not_records == []


def test_compression_tables_rebuild_from_the_records():
    compression = load_script("compression")
    groups = sorted({(record["setting"], record["tag"]) for record in compression.read_records()})
    assert groups, f"no records in {compression.RECORDS}"
    for setting, tag in groups:
        committed = (compression.OUTPUT / f"compression_{setting}{tag}.md").read_text()
        assert compression.markdown(setting, compression.recorded_runs(setting, tag, None)) == committed, (setting, tag)


def markdown_tables(text: str) -> list[str]:
    """Every Markdown table of ``text`` (consecutive lines starting with ``|``)."""
    return ["\n".join(match.group(0).strip().splitlines()) for match in re.finditer(r"(?m)(^\|.*\n)+", text)]


def section(heading: str) -> str:
    """One ``## heading`` section of docs/results.md."""
    text = RESULTS_MD.read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_compression_docs_tables_come_from_their_table_only_commands():
    compression = load_script("compression")
    text = section("## Lifelong compression")
    rebuilt = []
    for command in re.findall(r"python benchmarks/compression\.py ([^\n#]*--table-only[^\n#]*)", text):
        args, _ = compression.parse_args(command.split())
        rebuilt.append(compression.markdown(args.setting, compression.recorded_runs(args.setting, args.tag, None)))
    tables = markdown_tables(text)
    assert len(tables) >= 5 and len(rebuilt) >= 3
    assert [table for table in tables if not any(table in markdown for markdown in rebuilt)] == []


@pytest.mark.parametrize("suite", ["split-cifar10", "split-cifar10-full", "permuted-mnist"])
def test_method_suite_docs_table_comes_from_its_table_only_command(suite):
    suites = load_script("method_suites")
    text = section(suites.SUITES[suite].heading)
    (command,) = re.findall(rf"`python benchmarks/run\.py {suite} (--table-only [^`]*)`", text)
    args = suites.parse_args([suite, *command.split()])
    records = suites.latest(suites.read_jsonl(suites.log_path(suite)), (False, args.model or suites.SUITES[suite].model, args.epochs, args.train_size))
    assert suites.table(records, suites.SUITES[suite].published) in markdown_tables(text)


def test_robustness_and_vandeven_docs_tables_rebuild_from_their_logs():
    suites, vandeven = load_script("method_suites"), load_script("vandeven2019")
    assert "`python benchmarks/run.py robustness --table-only --write-results`" in section(suites.ROBUSTNESS_HEADING)
    assert markdown_tables(suites.robustness_section(False))[0] in markdown_tables(section(suites.ROBUSTNESS_HEADING))
    assert "`python benchmarks/vandeven2019.py --table-only --write-results`" in section(vandeven.SECTION)
    assert vandeven.table(vandeven.load_runs(vandeven.RUNS_LOG, False)) in markdown_tables(section(vandeven.SECTION))


def test_class_il_docs_sections_are_what_their_table_only_command_builds():
    class_il = load_script("class_il")
    args = class_il.parse_args(["--table-only"])
    records = class_il.read_jsonl(class_il.LOG)
    assert records, f"no records in {class_il.LOG}"
    committed = section(class_il.HEADING)
    assert "`python benchmarks/run.py class-il --table-only --write-results`" in committed
    assert committed.strip() == f"{class_il.HEADING}\n\n{class_il.section(records, args).strip()}"
    assert len(markdown_tables(committed)) >= 3  # Seq-MNIST, Seq-CIFAR-10, CLI defaults (+ the learning-rate diagnostic)
    buffers = f"{class_il.BUFFER_HEADING}\n\n{class_il.buffer_section(records, args).strip()}\n"
    assert buffers in class_il.STRATEGIES_MD.read_text()


def test_importing_the_avalanche_integration_prints_no_warning():
    pytest.importorskip("avalanche")
    done = python("import lifelong_kd.integrations.avalanche", PYTHONWARNINGS="default")
    assert done.returncode == 0 and done.stderr == "", done.stderr
