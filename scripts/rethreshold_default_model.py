"""Re-choose the bundled model's threshold on validation by another rule, without retraining.

    python scripts/rethreshold_default_model.py                       # the shipped rule: sens95
    python scripts/rethreshold_default_model.py --rule youden         # the rule shipped before 2026-11-26
    python scripts/rethreshold_default_model.py --dry-run             # print, change nothing

Reads the validation and test scores saved in ``models/default/predictions.csv`` (raw P(pneumonia),
labels) and runs the same re-finalisation as ``cxr evaluate --model RUN --threshold-rule …``
(``cxr.commands.evaluate.refinalize_from_predictions``, i.e. ``cxr.run_results.write_run_results``):
temperature fitted on validation NLL, threshold chosen on the
calibrated validation scores by ``--rule``, both applied to test once. Then it replaces
``metrics.json``, ``predictions.csv`` and the model card's generated sections in ``models/default/``,
keeping the card's "About this bundled model" section (its threshold sentence updated) and the population
section (rebuilt from ``population.json``).

The rule decision itself (sens95, chosen among rules on validation only) is in docs/benchmarks.md,
"Threshold rules on the bundled model's saved scores".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from cxr import paths  # noqa: E402
from cxr.commands.evaluate import refinalize_from_predictions  # noqa: E402
from cxr.config import THRESHOLD_RULES, TrainingConfig  # noqa: E402

ABOUT = "## About this bundled model"


def about_section(old_card: str, metrics: dict) -> str:
    """The old card's hand-written tail, with its threshold sentence rewritten for ``metrics``."""
    if ABOUT not in old_card:
        return ""
    tail = old_card[old_card.index(ABOUT):]
    test = metrics["test"]
    sentence = (f"validation ({metrics['threshold']:.3f}, {describe_rule(metrics)}), test sensitivity is "
                f"{test['sensitivity']['value']:.1%} and specificity\n  {test['specificity']['value']:.1%}: about "
                f"{1 - test['specificity']['value']:.0%} of normal test images are called pneumonia.")
    return re.sub(r"validation \([^)]*\)(?:, [^)]*\))?, test sensitivity is .*?called pneumonia\.", sentence, tail,
                  count=1, flags=re.S)


def describe_rule(metrics: dict) -> str:
    if metrics["threshold_rule"] == "sensitivity":
        return f"the highest threshold keeping validation sensitivity at or above {metrics['min_sensitivity']:.0%}"
    return {"youden": "Youden's J", "fixed": "a fixed cut-off"}.get(metrics["threshold_rule"],
                                                                     metrics["threshold_rule"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=THRESHOLD_RULES, default="sensitivity")
    parser.add_argument("--min-sensitivity", type=float, default=0.95)
    parser.add_argument("--fixed-threshold", type=float, default=0.5)
    parser.add_argument("--model", type=Path, default=paths.BUNDLED_MODEL_DIR)
    parser.add_argument("--dry-run", action="store_true", help="print the figures, change nothing")
    args = parser.parse_args()

    folder = args.model
    stored = json.loads((folder / "training_config.json").read_text())
    settings = TrainingConfig.from_dict(stored.get("training") or {}).replace(
        threshold_rule=args.rule, min_sensitivity=args.min_sensitivity, fixed_threshold=args.fixed_threshold)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for name, target in (("training_config.json", "config.json"), ("predictions.csv", "predictions.csv"),
                             ("population.json", "population.json")):
            if (folder / name).is_file():
                shutil.copy2(folder / name, work / target)
        # The same re-finalisation as `cxr evaluate --model RUN --threshold-rule …`, on a scratch copy: the
        # bundled folder is not a run directory, and its card keeps a hand-written section.
        metrics = refinalize_from_predictions(work, settings)
        test, validation = metrics["test"], metrics["validation"]
        print(f"rule {metrics['threshold_rule']}: threshold {metrics['threshold']:.4f}, temperature "
              f"{metrics['temperature']:.4f}; validation accuracy {validation['accuracy']['value']:.4f} "
              f"(sensitivity {validation['sensitivity']['value']:.4f}, specificity "
              f"{validation['specificity']['value']:.4f}); test accuracy {test['accuracy']['value']:.4f} "
              f"(sensitivity {test['sensitivity']['value']:.4f}, specificity {test['specificity']['value']:.4f}), "
              f"AUC {test['auc']['value']:.4f}, ECE after {metrics['calibration']['test']['ece_after']:.4f}")
        if args.dry_run:
            return 0
        old_card = (folder / "model_card.md").read_text()
        card = (work / "model_card.md").read_text()
        card = card.replace(f"# Model card — run {work.name}", "# Model card — bundled default model", 1)
        tail = about_section(old_card, metrics)
        card = card.rstrip("\n") + "\n\n" + tail if tail else card
        old_json = json.loads((folder / "model_card.json").read_text())
        new_json = json.loads((work / "model_card.json").read_text())
        new_json["run_id"] = old_json.get("run_id", new_json.get("run_id"))
        for name in ("metrics.json", "predictions.csv"):
            shutil.copy2(work / name, folder / name)
        (folder / "model_card.md").write_text(card)
        (folder / "model_card.json").write_text(json.dumps(new_json, indent=2) + "\n")
    for name in ("metrics.json", "predictions.csv", "model_card.md", "model_card.json"):
        (folder / name).chmod(0o644)
    print(f"updated {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
