"""Command-line benchmarks; see bench/README.md."""
