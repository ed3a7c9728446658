"""ringx-bench: drivers that measure ring vs ringX attention."""
