"""The LMISA ablation on phantoms, under one name: variants, profiles, the ablation itself and its reports.

The code lives in modules of one idea each; their public names stay importable from here:

- :mod:`lmisa_lite.variants`: which parts of LMISA each variant keeps, and its TrainConfig;
- :mod:`lmisa_lite.profiles`: the profile table (quick, standard, paper) of the ablation and the notebooks;
- :mod:`lmisa_lite.ablation`: :func:`run_ablation` and :func:`evaluate_unseen`;
- :mod:`lmisa_lite.run_cache`: reuse of finished variants;
- :mod:`lmisa_lite.reports`: summaries, tables, markdown and the bar chart.
"""

from __future__ import annotations

from lmisa_lite.ablation import AblationResult, evaluate_unseen, run_ablation
from lmisa_lite.profiles import ABLATION as PROFILES
from lmisa_lite.profiles import DATA_KEYS, profile_settings
from lmisa_lite.reports import ablation_table, plot_ablation, summarize_ablation
from lmisa_lite.variants import (MODALITY_TITLES, UNSEEN_MODALITY, VARIANT_DESCRIPTIONS, VARIANTS,
                                 parse_direction, variant_config)

__all__ = ["AblationResult", "DATA_KEYS", "MODALITY_TITLES", "PROFILES", "UNSEEN_MODALITY",
           "VARIANT_DESCRIPTIONS", "VARIANTS", "ablation_table", "evaluate_unseen", "parse_direction",
           "plot_ablation", "profile_settings", "run_ablation", "summarize_ablation", "variant_config"]
