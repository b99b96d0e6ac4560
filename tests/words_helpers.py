"""A model trained with spec labels and tier words on the synthetic CRM (activity log included),
shared by the label tests and the API tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from leadscore.config import Settings, load_spec
from leadscore.table import build_table

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "industry": {"label": "Sector", "values": {"software": "software and SaaS"}},
    "budget": "Budget confirmed",
}
TIER_WORDS = {"A": "on fire", "D": "frozen"}


def labelled_spec_path(synth_dir: Path, folder: Path) -> Path:
    """configs/synthetic.yaml on `synth_dir`, with labels and tier words."""
    spec = yaml.safe_load((ROOT / "configs" / "synthetic.yaml").read_text(encoding="utf-8"))
    spec["leads"]["path"] = str(synth_dir / "leads.csv")
    spec["outcome"]["table"]["path"] = str(synth_dir / "conversions.csv")
    spec["activities"]["path"] = str(synth_dir / "activities.csv")
    spec["train"] = {"min_per_class": 20, "params": {"num_threads": 1, "learning_rate": 0.1}}
    spec["leak_audit"] = {"enabled": False}
    spec["labels"] = LABELS
    spec["tiers"] = {"words": TIER_WORDS}
    path = folder / "labelled.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def train_labelled(synth_dir: Path, folder: Path) -> tuple[Path, pd.DataFrame]:
    """The bundle folder and the point-in-time table it was trained on (activity columns in)."""
    from leadscore.pipeline import run_training

    spec = load_spec(labelled_spec_path(synth_dir, folder))
    settings = Settings(models_dir=folder / "models", model_name="labelled",
                        feature_cache="off")
    result = run_training(spec, settings, track=False, with_report=False, baselines=False,
                          bundle_out=folder / "bundle")
    table, _ = build_table(spec)
    return result.bundle_dir, table
