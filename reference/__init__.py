"""The instructor's reference solution and the NSynth data pipeline.

Student-facing files (``features``, ``nsynth``, ``make_features``, ``pipeline``,
``model``, ``losses``, ``train``) are turned into the starter code by ``notegrade assign``;
the rest (rendering, the training driver, evaluation) stays with the instructor.
"""
