"""Test infrastructure shared by the test modules and the benchmarks."""
