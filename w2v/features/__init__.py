"""Acoustic features for CTC: fbank (``fbank.py``) and SSL representations, in lhotse storage."""
