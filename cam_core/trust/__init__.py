"""Can this map be believed: faithfulness (deletion against random maps and the target mask),
sanity (model randomisation), the trust report over a folder, the shortcut audit and the model's
evaluation against truth. The checks' API is this package's (``cam_core.trust.trust`` …).

Above the engine and the data layer; below the CLI and the app."""

from __future__ import annotations

from cam_core.lazy import exports

__all__, __getattr__ = exports(
    __name__,
    {
        **dict.fromkeys(
            (
                "BLUR_SIGMA",
                "FAITHFULNESS_STEPS",
                "RANDOM_SEEDS",
                "REFERENCE_EXPLAINERS",
                "SANITY_MAX_RHO",
                "SANITY_RULE",
                "SANITY_VIEWS",
                "edge_explainer",
                "method_explainer",
                "target_explainer",
            ),
            ".protocol",
        ),
        **dict.fromkeys(
            ("Faithfulness", "FaithfulnessVerdict", "faithfulness", "forwards", "random_maps", "rank_pixels"),
            ".deletion",
        ),
        **dict.fromkeys(("constant", "spearman", "ssim"), ".similarity"),
        **dict.fromkeys(
            ("Comparison", "Sanity", "cascade_blocks", "copy_of", "count_blocks", "randomise", "sanity"),
            ".randomisation",
        ),
        **dict.fromkeys(("VERDICTS", "TrustReport", "Verdict", "suggest_for_tile", "work", "trust"), ".checks"),
    },
)
