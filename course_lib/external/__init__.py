"""Loaders of third-party pretrained models (online only; tested offline against locally built copies).

- :mod:`course_lib.external.laion`: LAION-CLAP (Wu, Chen et al. 2023) through the ``laion-clap`` package.
"""
