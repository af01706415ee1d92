"""A package for the scan tests: providers marked with @injectable in submodules."""
