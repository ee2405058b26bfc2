"""w2v-k2: wav2vec-family self-supervised representations as features for k2 CTC/HLG decoding."""

__version__ = "0.1.0"
