"""The instructor's reference solution and the NSynth data pipeline.

Student-facing files (``features``, ``nsynth``, ``make_features``, ``pipeline``,
``model``, ``losses``, ``train``) are turned into the starter code by ``notegrade assign``;
the rest (rendering, held-out files, evaluation) stays with the instructor.
"""
