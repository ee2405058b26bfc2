"""CTC decoding by icefall's method names (ctc.py)."""
