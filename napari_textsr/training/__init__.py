"""Training engine: captioned data, degradations, the training loop, encoder pretraining.

Kept light on purpose: importing the package imports nothing heavy; import the
submodules (``napari_textsr.training.data``, ``.degradations``, ``.trainer``,
``.pretrain_encoder``) for what you need.
"""
