"""The models shipped inside the package, by name (``siamsearch/models/NAME``), and the one
rule that turns what a user gives (``Encoder.load(x)``, ``--model x``, ``--init x``) into a
model directory: nothing means the ``default`` model; an existing directory is that
directory; otherwise a shipped model's name is that model. A folder of the user's named
like a shipped model therefore wins over it, and ``./bq`` always means the folder.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).parent / "models"
DEFAULT = "default"
CARD = "MODEL_CARD.md"
"""Each shipped model's card: what it was trained on, its licences and its figures."""


def shipped_models() -> dict[str, Path]:
    """Every shipped model's name and directory, the default first.
    Example: ``list(shipped_models())`` → ``['default', 'bq']``."""
    found = sorted(p for p in SHIPPED.iterdir() if (p / "config.json").is_file()) if SHIPPED.is_dir() else []
    return {p.name: p for p in sorted(found, key=lambda p: (p.name != DEFAULT, p.name))}


def model_path(model: str | Path | None = None) -> Path:
    """The directory ``model`` names (the rule in the module docstring); a path that is neither
    comes back as given, for the loader to refuse with its own message.
    Example: ``model_path("bq")``, ``model_path("models/faq")``, ``model_path()`` (the default)."""
    if model is None:
        return SHIPPED / DEFAULT
    path = Path(model)
    if path.is_dir():
        return path
    return shipped_models().get(str(model), path)
