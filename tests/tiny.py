"""The tiny model configs the tests train with, defined once (imported as ``from tiny import TINY``: pytest puts
``tests/`` on ``sys.path`` for its conftest).

``TINY``: the smallest CMMD that still learns digits2v in an epoch or two (zdim 4, one hidden layer of 16, a
classifier layer of 8). ``TINY_WIDE``: the same with 32-wide layers (classifier 16), for the tests that check a
figure a 16-wide net reaches too slowly. Both are plain ``model:`` dicts of a ``RunConfig``; treat them as
read-only (``{**TINY, "kind": ...}`` or ``dict(TINY, ...)`` for a variant).
"""

__all__ = ["TINY", "TINY_WIDE"]

TINY = {"zdim": 4, "encoder_hidden": [16], "prior_hidden": [16], "decoder_hidden": [16], "classifier_hidden": [8]}
TINY_WIDE = dict(TINY, encoder_hidden=[32], prior_hidden=[32], decoder_hidden=[32], classifier_hidden=[16])
