"""The normalizer resource: which data-juicer recipe normalizes preference pairs.

Recipes are YAML files (data-juicer configs) in ``recipes_dir``; ``recipe`` names one
(file stem) — a user adds a recipe by dropping a YAML file there, no code change. The
run itself is the pure function ``assets.pairs.normalize.normalize_pairs``: data-juicer
in process, op by op, with its runtime pip installer blocked and op errors never skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from resources import settings

DEFAULT_RECIPES_DIR = str(settings.recipes_dir() / "replaysim")


class Normalizer(dg.ConfigurableResource):
    """Runs a data-juicer recipe from ``recipes_dir`` over preference pairs."""

    recipes_dir: str = Field(default=DEFAULT_RECIPES_DIR,
                             description="Directory of data-juicer YAML recipes.")
    recipe: str = Field(default="default", description="Recipe name (YAML file stem) or path.")
    verifier_tokenizer: str = Field(
        default="",
        description="Model reference whose chat template chat_template_validation_filter uses "
                    "(a directory, a .gguf file or 'smollm2-135m'); empty = the recipe's own.")
    op_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-op argument overrides, {op_name: {arg: value}}.")

    def recipes(self) -> list[str]:
        from assets.pairs.normalize import list_recipes

        return list_recipes(self.recipes_dir)

    def load(self, recipe: str | None = None):
        from assets.pairs.normalize import load_recipe

        return load_recipe(recipe or self.recipe, self.recipes_dir)

    def overrides(self) -> dict[str, dict[str, Any]]:
        out = {k: dict(v) for k, v in self.op_overrides.items()}
        if self.verifier_tokenizer:
            out.setdefault("chat_template_validation_filter", {})["tokenizer"] = self.verifier_tokenizer
        return out

    def normalize(self, pairs: Sequence[Mapping[str, Any]], recipe: Any = None):
        """-> assets.pairs.normalize.NormalizeResult (kept, rejections, per-op report).

        ``recipe``: a name, a path, a loaded ``Recipe``, or None for this resource's."""
        from assets.pairs.normalize import Recipe, normalize_pairs

        rec = recipe if isinstance(recipe, Recipe) else self.load(recipe)
        return normalize_pairs(pairs, rec, overrides=self.overrides())
