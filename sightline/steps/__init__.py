"""Pure, importable logic of the Triton Python-backend steps.

The ``model.py`` files under ``model_repository/`` are thin shells over these modules.
Everything here must stay Python 3.10 compatible: it runs inside the Triton container.
"""
