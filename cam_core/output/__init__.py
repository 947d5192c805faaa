"""Pictures and files made from results: colour maps, overlays, figures, and the result bundle
the CLI and the app both write. Above the engine."""
