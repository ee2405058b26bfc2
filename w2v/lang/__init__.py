"""Lang dirs and decoding graphs.

bpe       sentencepiece models with <blk>=0, <sos/eos>=1, <unk>=2
symbols   reading / writing tokens.txt and words.txt; what a disambiguation symbol is (k2-free)
lexicon   words.txt, tokens.txt, lexicons, L / L_disambig (bpe or Mandarin char)
arpa      interpolated modified Kneser-Ney ARPA estimation, ARPA reading
graph     H, G (kaldilm), HLG, the rescoring G
"""
