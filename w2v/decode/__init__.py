"""CTC decoding by icefall's method names (ctc.py) and synthetic peaky output (synthetic.py)."""
