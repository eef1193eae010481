"""forecaster and cdd stay standalone: never prefect, sqlalchemy, db, flows or settings."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cdd
import forecaster

FORBIDDEN = ("prefect", "sqlalchemy", "db", "flows", "settings", "alembic", "psycopg")
PACKAGE = Path(forecaster.__file__).parent
# the catalogue's vocabulary and file format: below db, settings and flows, beside forecaster
CDD_FORBIDDEN = (*FORBIDDEN, "forecaster", "tensorflow", "keras")


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"), [(PACKAGE, FORBIDDEN), (Path(cdd.__file__).parent, CDD_FORBIDDEN)]
)
def test_no_module_of_the_package_imports_the_service(package, forbidden):
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 10
    offenders = {str(p.name): sorted(_imported(p) & set(forbidden)) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def _modules_after(code: str) -> list[str]:
    """The top-level modules loaded by a fresh interpreter after running ``code``."""
    listing = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"import json, sys\n{code}\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_everything_loads_none_of_the_service():
    loaded = _modules_after(
        "import forecaster, forecaster.backtest, forecaster.metrics, forecaster.model\n"
        "from forecaster import LSTMForecaster"
    )
    assert "keras" in loaded
    assert [m for m in loaded if m in FORBIDDEN] == []


def test_config_baselines_and_metrics_load_without_tensorflow():
    loaded = _modules_after(
        "from forecaster import ForecasterConfig, NaiveForecaster, ArtifactError\n"
        "import forecaster.metrics"
    )
    assert "forecaster" in loaded
    assert "tensorflow" not in loaded and "keras" not in loaded
