"""`notegrade demo` (command): the toolkit end to end on a small rendered dataset (steps), with a synthetic class (synthetic_class) and its own rubric (demo_rubric.toml)."""
