"""Everything command-line, one module per model family: data preparation, evaluation reports,
cards, benchmarks and the ``course-lib train|eval|generate FAMILY`` entry points.

Each family's module provides ``train_cli(argv) -> int``, ``eval_cli(argv) -> dict``,
``bench() -> dict`` and, where the model generates, ``generate_cli(argv) -> int``;
:mod:`course_lib.recipes.common` holds the flags, run layout, card and timer they share.
"""
