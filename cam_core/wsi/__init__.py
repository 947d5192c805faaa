"""Whole slides: OpenSlide regions within a memory bound, synthetic test slides, QuPath GeoJSON,
and ``batch`` on Dask. Above the engine; below the CLI and the app."""
